"""Categories dock: add, rename, recolour; digit keys 1-9 pick the n-th category.

Picking a category (click or digit) recategorises the selected instances; with nothing
selected it sets the category of the shapes drawn next, which the dock shows in bold and
in its "New shapes" line, so neither changes the other unnoticed.
"""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QColorDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.store import DEFAULT_COLORS, ProjectStore
from app.errors import MaskLoopError


def unused_color(used: list[str]) -> str:
    """The first palette colour no category has yet (then the palette again, in order)."""
    taken = {c.lower() for c in used}
    free = [c for c in DEFAULT_COLORS if c.lower() not in taken]
    return free[0] if free else DEFAULT_COLORS[len(used) % len(DEFAULT_COLORS)]


def color_icon(color: str) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(color))
    return QIcon(pix)


class CategoriesPanel(QWidget):
    categories_changed = Signal()
    category_picked = Signal(int)  # the user chose this category (click or digit key)
    visibility_changed = Signal(frozenset)  # ids of the categories whose instances are hidden

    def __init__(self, store: ProjectStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._drawing: int | None = None
        self.drawing_label = QLabel()
        self.drawing_label.setToolTip(
            "The category of the shapes you draw next: pick one with nothing selected"
        )
        self.list = QListWidget()
        self.list.itemClicked.connect(self._clicked)
        self.list.itemChanged.connect(self._check_changed)
        self._hidden: frozenset[int] = frozenset()
        self.list.itemDoubleClicked.connect(lambda _: self.rename())
        buttons = QHBoxLayout()
        for icon, tip, slot in (
            ("mdi.plus", "Add a category", self.add),
            ("mdi.rename-box", "Rename the selected category (or double-click it)", self.rename),
            ("mdi.palette", "Change the selected category's colour", self.recolor),
        ):
            b = QToolButton()
            b.setIcon(qta.icon(icon))
            b.setToolTip(tip)
            b.clicked.connect(slot)
            buttons.addWidget(b)
        buttons.addStretch()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(buttons)
        layout.addWidget(self.drawing_label)
        layout.addWidget(self.list)
        self.refresh()

    def refresh(self) -> None:
        current = self.current_id()
        self.list.blockSignals(True)
        self.list.clear()
        for n, cat in enumerate(self.store.categories(), 1):
            key = f"[{n}] " if n <= 9 else ""
            item = QListWidgetItem(color_icon(cat.color), f"{key}{cat.name}")
            item.setData(Qt.ItemDataRole.UserRole, cat.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            shown = cat.id not in self._hidden
            item.setCheckState(Qt.CheckState.Checked if shown else Qt.CheckState.Unchecked)
            item.setToolTip(
                f"{cat.name} (id {cat.id})"
                + (f"; press {n} to apply it" if n <= 9 else "")
                + "; untick to hide its instances"
            )
            self.list.addItem(item)
            if cat.id == current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self._show_drawing()

    def hidden_categories(self) -> frozenset[int]:
        return self._hidden

    def set_category_visible(self, category_id: int, visible: bool) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == category_id:
                item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)

    def _check_changed(self, item: QListWidgetItem) -> None:
        cat_id = item.data(Qt.ItemDataRole.UserRole)
        hidden = set(self._hidden)
        if item.checkState() == Qt.CheckState.Checked:
            hidden.discard(cat_id)
        else:
            hidden.add(cat_id)
        if frozenset(hidden) != self._hidden:
            self._hidden = frozenset(hidden)
            self.visibility_changed.emit(self._hidden)

    def show_drawing_category(self, category_id: int | None) -> None:
        """Mark the category new shapes get (bold, and in the "New shapes" line)."""
        self._drawing = category_id
        self._show_drawing()

    def drawing_category(self) -> int | None:
        """The marked category, or the first one when none was picked (what the editor uses)."""
        ids = [c.id for c in self.store.categories()]
        return self._drawing if self._drawing in ids else (ids[0] if ids else None)

    def _show_drawing(self) -> None:
        drawing = self.drawing_category()
        for row in range(self.list.count()):
            item = self.list.item(row)
            font = item.font()
            font.setBold(item.data(Qt.ItemDataRole.UserRole) == drawing)
            item.setFont(font)
        if drawing is None:
            self.drawing_label.setText("New shapes: add a category first")
        else:
            cat = self.store.category(drawing)
            self.drawing_label.setText(
                f'New shapes: <span style="color:{cat.color}">\u25a0</span> <b>{cat.name}</b>'
            )

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def id_for_digit(self, digit: int) -> int | None:
        cats = self.store.categories()
        return cats[digit - 1].id if 1 <= digit <= len(cats) else None

    def pick_digit(self, digit: int) -> None:
        cat_id = self.id_for_digit(digit)
        if cat_id is not None:
            self.category_picked.emit(cat_id)

    def _clicked(self, item: QListWidgetItem) -> None:
        self.category_picked.emit(item.data(Qt.ItemDataRole.UserRole))

    def _guard(self, fn) -> None:
        try:
            fn()
        except MaskLoopError as exc:
            QMessageBox.warning(self, "Categories", str(exc))
            return
        self.refresh()
        self.categories_changed.emit()

    def add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add category", "Name:")
        if ok and name.strip():
            used = [c.color for c in self.store.categories()]
            self._guard(lambda: self.store.add_category(name, unused_color(used)))

    def rename(self) -> None:
        cat_id = self.current_id()
        if cat_id is None:
            return
        old = self.store.category(cat_id).name
        name, ok = QInputDialog.getText(self, "Rename category", "Name:", text=old)
        if ok and name.strip() and name != old:
            self._guard(lambda: self.store.update_category(cat_id, name=name))

    def recolor(self) -> None:
        cat_id = self.current_id()
        if cat_id is None:
            return
        color = QColorDialog.getColor(QColor(self.store.category(cat_id).color), self)
        if color.isValid():
            self._guard(lambda: self.store.update_category(cat_id, color=color.name()))
