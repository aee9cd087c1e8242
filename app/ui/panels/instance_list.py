"""Instance list dock: category, score and how each instance was made (its provenance: a
proposal, assisted, drawn, edited or imported); click selects on canvas,
double-click zooms to it. Instances are numbered 1..N on their image (database ids mean
nothing to a person); every column sorts, numbers and scores as numbers."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from app.core.document import ImageDocument
from app.core.types import Category, Instance, Provenance, Source

from .instance_filter import InstanceFilter

PROVENANCE_LABELS = {
    Provenance.PROPOSAL: "proposal",
    Provenance.ASSISTED: "assisted",
    Provenance.DRAWN: "drawn",
    Provenance.EDITED: "edited",
    Provenance.IMPORTED: "imported",
}


def source_label(inst: Instance, pending: bool) -> str:
    """The Source column: how the instance was made, and a proposal's review state."""
    if inst.source == Source.MODEL:
        return "proposal (pending)" if pending else "proposal (accepted)"
    if inst.made_as == Provenance.PROPOSAL:
        return "proposal (recategorised)"  # its outline is still the model's
    return PROVENANCE_LABELS[inst.made_as]


def filter_kind(inst: Instance) -> str:
    """What the filter row's Source choice compares: ``model`` for a proposal (pending or
    accepted), else how it was made (a recategorised proposal counts as edited)."""
    if inst.source == Source.MODEL:
        return "model"
    if inst.made_as == Provenance.PROPOSAL:
        return Provenance.EDITED.value
    return inst.made_as.value


SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class _Row(QTreeWidgetItem):
    """Sorts by the value stored for sorting (numbers as numbers), else by text."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        column = self.treeWidget().sortColumn() if self.treeWidget() else 0
        mine, theirs = self.data(column, SORT_ROLE), other.data(column, SORT_ROLE)
        if mine is not None and theirs is not None:
            return mine < theirs
        return self.text(column) < other.text(column)


class InstanceListPanel(QTreeWidget):
    selection_requested = Signal(list)
    zoom_requested = Signal(int)  # double-click: show this instance large

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderLabels(["#", "Category", "Score", "Source"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.itemSelectionChanged.connect(self._selected)
        self.itemDoubleClicked.connect(
            lambda item, _col: self.zoom_requested.emit(item.data(0, Qt.ItemDataRole.UserRole))
        )
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._syncing = False
        self._filter = InstanceFilter()
        self._threshold = 0.0
        self._row_keys: dict[int, tuple[int, str, bool, float | None]] = {}

    def show_document(self, doc: ImageDocument | None, categories: list[Category]) -> None:
        self._syncing = True
        self.clear()
        self._items = {}
        self._row_keys = {}
        cats = {c.id: c for c in categories}
        if doc is not None:
            rows = []
            for number, (i, inst) in enumerate(doc.instances.items(), 1):
                cat = cats.get(inst.category_id)
                source = source_label(inst, doc.is_pending(i))
                if inst.crowd:
                    source += ", crowd"
                item = _Row(
                    [
                        str(number),
                        cat.name if cat else f"? {inst.category_id}",
                        "" if inst.score is None else f"{inst.score:.2f}",
                        source,
                    ]
                )
                item.setData(0, Qt.ItemDataRole.UserRole, i)
                item.setData(0, SORT_ROLE, number)
                item.setData(2, SORT_ROLE, -1.0 if inst.score is None else inst.score)
                item.setToolTip(0, f"instance {number} of {len(doc.instances)}")
                pending = doc.is_pending(i)
                self._row_keys[i] = (inst.category_id, filter_kind(inst), pending, inst.score)
                if cat is not None:
                    item.setForeground(1, QColor(cat.color))
                rows.append(item)
                self._items[i] = item
            self.addTopLevelItems(rows)
            self._apply_filter()
        self._syncing = False

    def set_filter(self, flt: InstanceFilter) -> None:
        self._filter = flt
        self._apply_filter()

    def set_threshold(self, value: float) -> None:
        """Leave out pending proposals scoring below the score threshold, as the canvas does."""
        self._threshold = value
        self._apply_filter()

    def _apply_filter(self) -> None:
        for i, item in self._items.items():
            _, _, pending, score = keys = self._row_keys[i]
            below = pending and score is not None and score < self._threshold
            item.setHidden(below or not self._filter.passes(*keys))

    def shown_ids(self) -> list[int]:
        """Instance ids of the rows the filter shows, in row order."""
        rows = (self.topLevelItem(r) for r in range(self.topLevelItemCount()))
        return [it.data(0, Qt.ItemDataRole.UserRole) for it in rows if not it.isHidden()]

    def set_selected(self, ids: list[int]) -> None:
        self._syncing = True
        self.clearSelection()
        for i in ids:
            item = self._items.get(i)
            if item is not None:
                item.setSelected(True)
                self.scrollToItem(item)
        self._syncing = False

    def _selected(self) -> None:
        if not self._syncing:
            self.selection_requested.emit(
                [it.data(0, Qt.ItemDataRole.UserRole) for it in self.selectedItems()]
            )
