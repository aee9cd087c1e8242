"""Image list dock: status icons, filter by status, sort by name / status / uncertainty, counts.

Names are shown relative to the folder all images share (``nuclei_004.png``, not
``../imgs/nuclei_004.png``); the full path is in the tooltip. The model's uncertainty
(expected corrections) follows the name of images still to review, labelled.
"""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus

STATUS_ICONS = {
    ImageStatus.NEW: ("mdi.circle-outline", "#9e9e9e"),
    ImageStatus.PROPOSED: ("mdi.robot-outline", "#42a5f5"),
    ImageStatus.IN_PROGRESS: ("mdi6.progress-pencil", "#ffb300"),
    ImageStatus.DONE: ("mdi.check-circle", "#66bb6a"),
    ImageStatus.SKIPPED: ("mdi.skip-next-circle-outline", "#bdbdbd"),
}
SORTS = {"Name": "path", "Status": "status", "Uncertainty": "uncertainty"}
REVIEWED = (ImageStatus.DONE, ImageStatus.SKIPPED)


def common_folder(paths: list[str]) -> str:
    """The folder prefix (``a/b/``) every stored path shares, '' if none."""
    if not paths:
        return ""
    parts = [p.split("/")[:-1] for p in paths]
    prefix: list[str] = []
    for names in zip(*parts, strict=False):
        if len(set(names)) != 1:
            break
        prefix.append(names[0])
    return "/".join(prefix) + "/" if prefix else ""


def row_label(record: ImageRecord, prefix: str) -> str:
    """The name under the shared folder, and the uncertainty of an image still to review."""
    name = record.path[len(prefix) :] if record.path.startswith(prefix) else record.path
    if record.uncertainty is not None and record.status not in REVIEWED:
        name += f"  \u2013 {record.uncertainty:.1f} expected fixes"
    return name


class ImageListPanel(QWidget):
    image_selected = Signal(int)

    def __init__(self, store: ProjectStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.filter = QComboBox()
        self.filter.addItem("All images", None)
        for status in ImageStatus:
            self.filter.addItem(status.value.replace("_", " ").capitalize(), status)
        self.filter.setToolTip("Show only images with this status")
        self.sort = QComboBox()
        self.sort.addItems(list(SORTS))
        self.sort.setToolTip(
            "Order of the list (and of 'next image'). Uncertainty, shown after each name, is "
            "the number of corrections the model expects the review to need: most first."
        )
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        top = QHBoxLayout()
        top.addWidget(self.filter)
        top.addWidget(self.sort)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.list)
        layout.addWidget(self.counts)
        self._icons = {s: qta.icon(name, color=c) for s, (name, c) in STATUS_ICONS.items()}
        self.filter.currentIndexChanged.connect(self.refresh)
        self.sort.currentIndexChanged.connect(self.refresh)
        self.list.currentItemChanged.connect(self._picked)
        self._current: int | None = None
        self._prefix = ""
        self.refresh()

    def order(self) -> str:
        return SORTS[self.sort.currentText()]

    def refresh(self) -> None:
        """Re-read the list from the store (statuses change with every review)."""
        self.list.blockSignals(True)
        self.list.clear()
        prefix = self._prefix = common_folder([im.path for im in self.store.images()])
        for im in self.store.images(status=self.filter.currentData(), order=self.order()):
            item = QListWidgetItem(self._icons[im.status], row_label(im, prefix))
            item.setData(Qt.ItemDataRole.UserRole, im.id)
            tip = f"{self.store.abspath(im)}\n{im.width} x {im.height}, {im.status.value}"
            if im.uncertainty is not None:
                tip += (
                    f"\nuncertainty {im.uncertainty:.2f}: corrections the model expects this "
                    "image's review to need"
                )
            item.setToolTip(tip)
            self.list.addItem(item)
            if im.id == self._current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.refresh_counts()

    def update_status(self, image_id: int) -> None:
        """Cheap update of one row's icon after an edit."""
        record = self.store.image(image_id)
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == image_id:
                item.setIcon(self._icons[record.status])
                item.setText(row_label(record, self._prefix))
        self.refresh_counts()

    def refresh_counts(self) -> None:
        counts = self.store.status_counts()
        self.counts.setText(
            f"{sum(counts.values())} images: "
            + ", ".join(f"{n} {s.value.replace('_', ' ')}" for s, n in counts.items() if n)
        )

    def set_current(self, image_id: int) -> None:
        self._current = image_id
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == image_id:
                self.list.blockSignals(True)
                self.list.setCurrentItem(item)
                self.list.blockSignals(False)
                return

    def display_name(self, record: ImageRecord) -> str:
        """The image's name as the list shows it (under the images' shared folder)."""
        prefix = self._prefix
        return record.path[len(prefix) :] if record.path.startswith(prefix) else record.path

    def ids(self) -> list[int]:
        return [self.list.item(r).data(Qt.ItemDataRole.UserRole) for r in range(self.list.count())]

    def _picked(self, item: QListWidgetItem | None) -> None:
        if item is not None:
            self._current = item.data(Qt.ItemDataRole.UserRole)
            self.image_selected.emit(self._current)
