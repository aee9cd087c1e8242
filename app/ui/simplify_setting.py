"""The Simplify tolerance in the window: its toolbar box, where it is saved and how it
reaches the outlines traced next (brush and eraser here, proposals and assists on the
proposal worker), plus the vertex count of the selection in the status bar.

The worker's predictor traces every proposal and assist answer with its
``polygon_tolerance``. Predictors built by :meth:`SimplifySetting.predictor_factory` start
at the setting, and a change is written to the one in use: a float it reads once per image
or answer (the write is atomic), so the next one traced gets the new tolerance whole.
Outlines already made are never re-traced: a new tolerance changes what comes next.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QLabel

from app.core.document import ImageDocument
from app.core.simplify_tolerance import (
    MAX_SIMPLIFY_TOLERANCE,
    check_tolerance,
    project_tolerance,
    set_project_tolerance,
)
from app.core.store import ProjectStore, StoreError

from .workers import ModelChoice, Predictor, PredictorFactory, zoo_predictor_factory

SIMPLIFY_TIP = (
    "Simplify tolerance (saved with the project): how far, in pixels, the outline of a new "
    "proposal, assist answer or brush / eraser result may move to lose vertices. 1.4 px "
    "(like labelme and CVAT) gives a nucleus about 8-12 vertices and keeps ~97% overlap "
    "with its mask; 0 keeps every pixel corner. Outlines already made keep theirs; the "
    "status bar shows the selected outline's vertex count."
)


class SimplifySetting(QObject):
    """The project's simplify tolerance while its window is open."""

    changed = Signal(float)  # px, after it was saved
    failed = Signal(str)  # a tolerance the project did not take (read-only, busy)

    def __init__(self, store: ProjectStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.value = project_tolerance(store)
        self._predictor: weakref.ReferenceType | None = None

    def set_value(self, px: float) -> None:
        """Save ``px`` as the project's tolerance; the next traced outline uses it."""
        value = check_tolerance(px)
        if value == self.value:
            return
        try:
            set_project_tolerance(self.store, value)
        except StoreError as exc:
            self.failed.emit(f"Simplify tolerance not saved: {exc}")
            return
        self.value = value
        predictor = self._predictor() if self._predictor is not None else None
        if predictor is not None:
            predictor.polygon_tolerance = value
        self.changed.emit(value)

    def predictor_factory(
        self, build: PredictorFactory = zoo_predictor_factory
    ) -> PredictorFactory:
        """``build`` for a :class:`ProposalController`, with predictors that trace at this
        tolerance: each starts at it, and a change is written to the one in use."""

        def with_tolerance(choice: ModelChoice, root: Path) -> Predictor:
            predictor = build(choice, root)
            predictor.polygon_tolerance = self.value
            self._predictor = weakref.ref(predictor)
            return predictor

        return with_tolerance

    def spin_box(self) -> QDoubleSpinBox:
        """The toolbar's box: 0 to the maximum in 0.1 px, saved when the value is set."""
        box = QDoubleSpinBox()
        box.setRange(0.0, MAX_SIMPLIFY_TOLERANCE)
        box.setDecimals(1)
        box.setSingleStep(0.1)
        box.setSuffix(" px")
        box.setKeyboardTracking(False)  # typed digits count once Enter or focus-out
        box.setToolTip(SIMPLIFY_TIP)
        box.setValue(self.value)
        box.valueChanged.connect(self.set_value)
        self.changed.connect(box.setValue)
        self.failed.connect(lambda _message: box.setValue(self.value))
        return box


def vertex_count(doc: ImageDocument | None, ids: Sequence[int]) -> int:
    """Vertices of the instances ``ids`` on ``doc``: every ring's, holes included."""
    if doc is None:
        return 0
    total = 0
    for i in ids:
        inst = doc.instances.get(i)
        if inst is not None:
            total += sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in inst.polygons)
    return total


class VertexCountLabel(QLabel):
    """The status bar's vertex count of the selection (empty without one)."""

    def __init__(self) -> None:
        super().__init__()
        self.setToolTip(
            "Vertices of the selected outline (holes included). New outlines get fewer with "
            "a larger Simplify tolerance (toolbar)."
        )

    def show_selection(self, doc: ImageDocument | None, ids: Sequence[int]) -> None:
        count = vertex_count(doc, ids)
        if not ids or not count:
            self.clear()
        elif len(ids) == 1:
            self.setText(f"{count} vertices")
        else:
            self.setText(f"{len(ids)} selected, {count} vertices")
