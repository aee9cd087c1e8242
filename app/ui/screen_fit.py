"""Keep windows on a screen: restored geometry from another monitor layout, or a floating
dock Qt places at its own idea of a position, must never open off-screen or larger than the
screen, and a first run opens at most of the screen rather than a small default."""

from __future__ import annotations

from PySide6.QtCore import QRect
from PySide6.QtGui import QGuiApplication, QScreen
from PySide6.QtWidgets import QWidget

FIRST_RUN_SHARE = 0.9  # of the available screen area, in each direction


def _screen_for(widget: QWidget, anchor: QWidget | None) -> QScreen:
    screen = QGuiApplication.screenAt(widget.frameGeometry().center())
    if screen is None and anchor is not None:
        screen = anchor.screen()
    return screen or QGuiApplication.primaryScreen()


def fitted_rect(frame: QRect, available: QRect) -> QRect:
    """``frame`` shrunk to fit ``available`` and moved inside it (as little as possible)."""
    w, h = min(frame.width(), available.width()), min(frame.height(), available.height())
    x = min(max(frame.x(), available.x()), available.x() + available.width() - w)
    y = min(max(frame.y(), available.y()), available.y() + available.height() - h)
    return QRect(x, y, w, h)


def _place(widget: QWidget, frame: QRect) -> None:
    """Give the window this frame (position and outer size, window decorations included)."""
    margins = widget.frameGeometry().size() - widget.geometry().size()
    widget.resize(frame.width() - margins.width(), frame.height() - margins.height())
    widget.move(frame.topLeft())


def clamp_to_screen(widget: QWidget, anchor: QWidget | None = None) -> None:
    """Move (and shrink if needed) a top-level window so all of it is on one screen: the
    screen it is mostly on, else ``anchor``'s, else the primary one."""
    available = _screen_for(widget, anchor).availableGeometry()
    frame = widget.frameGeometry()
    fitted = fitted_rect(frame, available)
    if fitted != frame:
        _place(widget, fitted)


def center_on(widget: QWidget, anchor: QWidget) -> None:
    """Centre a window over ``anchor`` (e.g. a floating dock over the main window), on screen."""
    frame = widget.frameGeometry()
    frame.moveCenter(anchor.frameGeometry().center())
    _place(widget, fitted_rect(frame, _screen_for(anchor, None).availableGeometry()))


def first_run_geometry(widget: QWidget) -> None:
    """Most of the primary screen, centred: the size a window opens at the first time."""
    available = QGuiApplication.primaryScreen().availableGeometry()
    w = int(available.width() * FIRST_RUN_SHARE)
    h = int(available.height() * FIRST_RUN_SHARE)
    frame = QRect(0, 0, w, h)
    frame.moveCenter(available.center())
    _place(widget, frame)
