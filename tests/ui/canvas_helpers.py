"""Helpers shared by the GUI tests: the main window opened on a project, a store snapshot and
synthetic mouse input on the canvas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from app.core.store import ProjectStore
from app.core.types import Polygon
from app.ui.main_window import MainWindow


def square(x: float, y: float, s: float) -> Polygon:
    return Polygon(np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], np.float32))


def snapshot(store: ProjectStore) -> list:
    """Every image's status, instances and accepted set (timestamps excluded)."""
    out = []
    for im in store.images():
        insts = [
            (
                i.id,
                i.category_id,
                i.score,
                i.source.value,
                [(p.exterior.tolist(), [h.tolist() for h in p.holes]) for p in i.polygons],
            )
            for i in store.instances(im.id)
        ]
        out.append((im.path, im.status.value, insts, sorted(store.accepted_ids(im.id))))
    return out


def _send(widget, kind: QEvent.Type, pos: QPoint, button, buttons, modifiers) -> None:
    event = QMouseEvent(
        kind,
        QPointF(pos),
        QPointF(widget.mapToGlobal(pos)),
        button,
        buttons,
        modifiers,
    )
    QApplication.sendEvent(widget, event)


def view_point(view, x: float, y: float) -> QPoint:
    return view.mapFromScene(QPointF(x, y))


def click(view, x, y, modifiers=Qt.KeyboardModifier.NoModifier, double=False) -> None:
    vp, pos = view.viewport(), view_point(view, x, y)
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    _send(vp, QEvent.Type.MouseButtonPress, pos, left, left, modifiers)
    _send(vp, QEvent.Type.MouseButtonRelease, pos, left, none, modifiers)
    if double:
        _send(vp, QEvent.Type.MouseButtonDblClick, pos, left, left, modifiers)
        _send(vp, QEvent.Type.MouseButtonRelease, pos, left, none, modifiers)


def drag(view, points: list[tuple[float, float]]) -> None:
    """Press at the first scene point, move through the others, release at the last."""
    vp = view.viewport()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    mods = Qt.KeyboardModifier.NoModifier
    pts = [view_point(view, x, y) for x, y in points]
    _send(vp, QEvent.Type.MouseMove, pts[0], none, none, mods)
    _send(vp, QEvent.Type.MouseButtonPress, pts[0], left, left, mods)
    for p in pts[1:]:
        _send(vp, QEvent.Type.MouseMove, p, none, left, mods)
    _send(vp, QEvent.Type.MouseButtonRelease, pts[-1], left, none, mods)


def open_main_window(qtbot, root: Path, *, size: tuple[int, int] = (1000, 700)) -> MainWindow:
    """The real main window on the project at ``root``, shown, fitted and focused on the canvas."""
    win = MainWindow(ProjectStore.open(root))
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    win.canvas.fit()
    win.canvas.setFocus()
    return win
