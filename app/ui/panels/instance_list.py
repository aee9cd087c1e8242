"""Instance list dock: category, score and source of each instance; click selects on canvas."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from app.core.document import ImageDocument
from app.core.types import Category

SOURCE_LABELS = {"human": "drawn", "model": "proposal", "model_edited": "edited proposal"}


class InstanceListPanel(QTreeWidget):
    selection_requested = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderLabels(["#", "Category", "Score", "Source"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.itemSelectionChanged.connect(self._selected)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._syncing = False

    def show_document(self, doc: ImageDocument | None, categories: list[Category]) -> None:
        self._syncing = True
        self.clear()
        self._items = {}
        cats = {c.id: c for c in categories}
        if doc is not None:
            rows = []
            for i, inst in doc.instances.items():
                cat = cats.get(inst.category_id)
                source = SOURCE_LABELS[inst.source.value]
                if inst.source.value == "model":
                    source += " (pending)" if doc.is_pending(i) else " (accepted)"
                item = QTreeWidgetItem(
                    [
                        str(i),
                        cat.name if cat else f"? {inst.category_id}",
                        "" if inst.score is None else f"{inst.score:.2f}",
                        source,
                    ]
                )
                item.setData(0, Qt.ItemDataRole.UserRole, i)
                if cat is not None:
                    item.setForeground(1, QColor(cat.color))
                rows.append(item)
                self._items[i] = item
            self.addTopLevelItems(rows)
        self._syncing = False

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
