"""The filter row above the Instances list: category, source and minimum score, so one kind
of instance can be reviewed on a crowded image."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QGridLayout, QWidget

from app.core.types import Category

SOURCES = {
    "All sources": None,
    "Pending proposals": "pending",
    "Accepted proposals": "accepted",
    "Assisted": "assisted",
    "Edited": "edited",
    "Drawn": "drawn",
    "Imported": "imported",
}


@dataclass(frozen=True)
class InstanceFilter:
    """Which rows to show; None / 0 lets everything through."""

    category_id: int | None = None
    source: str | None = None  # a SOURCES value
    min_score: float = 0.0

    def passes(self, category_id: int, source: str, pending: bool, score: float | None) -> bool:
        """``source`` is ``model`` for a proposal, else how the instance was made."""
        if self.category_id is not None and category_id != self.category_id:
            return False
        kind = ("pending" if pending else "accepted") if source == "model" else source
        if self.source is not None and kind != self.source:
            return False
        return score is None or score >= self.min_score


class InstanceFilterBar(QWidget):
    changed = Signal(object)  # InstanceFilter

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.category = QComboBox()
        self.category.setToolTip("Show the instances of one category")
        self.source = QComboBox()
        for text, value in SOURCES.items():
            self.source.addItem(text, value)
        self.source.setToolTip(
            "Show one kind only: pending or accepted proposals, or instances made with an "
            "assist, edited, drawn by hand or imported"
        )
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setPrefix("score \u2265 ")
        self.min_score.setToolTip(
            "List only instances scoring at least this (a filter of this list; the toolbar's "
            "score threshold decides which proposals are shown and reviewed)"
        )
        # Two rows, and long category names elide: the dock stays narrow beside the image.
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for column, combo in enumerate((self.category, self.source)):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)
            layout.addWidget(combo, 0, column)
        layout.addWidget(self.min_score, 1, 0)
        self.set_categories([])
        self.category.currentIndexChanged.connect(self._emit)
        self.source.currentIndexChanged.connect(self._emit)
        self.min_score.valueChanged.connect(self._emit)

    def set_categories(self, categories: list[Category]) -> None:
        current = self.category.currentData()
        self.category.blockSignals(True)
        self.category.clear()
        self.category.addItem("All categories", None)
        for c in categories:
            self.category.addItem(c.name, c.id)
        self.category.setCurrentIndex(max(0, self.category.findData(current)))
        self.category.blockSignals(False)

    def current(self) -> InstanceFilter:
        return InstanceFilter(
            self.category.currentData(), self.source.currentData(), self.min_score.value()
        )

    def _emit(self, *_: object) -> None:
        self.changed.emit(self.current())
