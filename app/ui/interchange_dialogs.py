"""The File menu's forms: new project, import (COCO, label maps, labelme), export (COCO,
label maps). Each form only collects choices into a dataclass; :mod:`.file_menu` runs the
same core functions the command line does with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.core.types import Category, ImageStatus


class Kind(StrEnum):
    COCO = "COCO JSON"
    LABEL_MAPS = "label maps"
    LABELME = "labelme"
    YOLO = "YOLO segmentation"
    ROIS = "ImageJ / Fiji ROI sets"


def _existing(edit: QLineEdit, *, folder: bool) -> bool:
    """The field names an existing folder (or file); an empty field names nothing."""
    text = edit.text().strip()
    if not text:
        return False
    path = Path(text).expanduser()
    return path.is_dir() if folder else path.is_file()


def _path_row(edit: QLineEdit, browse) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("Browse\u2026")
    button.clicked.connect(browse)
    layout.addWidget(button)
    return row


class _Form(QDialog):
    """A form with OK/Cancel; OK stays disabled until :meth:`_complete` holds."""

    def __init__(self, title: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.form = QFormLayout(self)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

    def _finish(self) -> None:
        self.form.addRow(self.buttons)
        self._update()
        self.setMinimumWidth(560)

    def _complete(self) -> bool:
        raise NotImplementedError

    def _update(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(self._complete())

    def _line(self, placeholder: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        edit.textChanged.connect(lambda _: self._update())
        return edit


@dataclass(frozen=True)
class NewProjectChoice:
    images: Path
    project: Path


class NewProjectDialog(_Form):
    """Images folder (existing) and project folder (created if it does not exist)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("New project", parent)
        self.images = self._line("folder of images (searched recursively)")
        self.project = self._line("folder to create, e.g. ~/projects/nuclei")
        self.form.addRow("Images", _path_row(self.images, self._browse_images))
        self.form.addRow("Project folder", _path_row(self.project, self._browse_project))
        note = QLabel(
            "The project folder is created if it does not exist. It holds maskloop.sqlite and "
            "trained models; images are not copied. It may also be the images folder."
        )
        note.setWordWrap(True)
        self.form.addRow(note)
        self._finish()

    def _browse_images(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", self.images.text())
        if folder:
            self.images.setText(folder)
            if not self.project.text():
                self.project.setText(str(Path(folder).parent / f"{Path(folder).name}-maskloop"))

    def _browse_project(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Project folder to create (or an existing one)", self.project.text()
        )
        if path:
            self.project.setText(path)

    def _complete(self) -> bool:
        return _existing(self.images, folder=True) and bool(self.project.text().strip())

    def choice(self) -> NewProjectChoice:
        return NewProjectChoice(
            Path(self.images.text()).expanduser(), Path(self.project.text()).expanduser()
        )


@dataclass(frozen=True)
class ImportChoice:
    kind: Kind
    source: Path  # COCO file, or folder of label maps / labelme files
    images_root: Path | None = None  # COCO: where file_name values are
    status: ImageStatus = ImageStatus.DONE
    replace: bool = False
    category_id: int | None = None  # label maps


class ImportDialog(_Form):
    def __init__(
        self, kind: Kind, categories: list[Category], parent: QWidget | None = None
    ) -> None:
        super().__init__(f"Import {kind.value}", parent)
        self.kind = kind
        what = "COCO instances JSON file" if kind is Kind.COCO else f"folder of {kind.value}"
        self.source = self._line(what)
        self.form.addRow("From", _path_row(self.source, self._browse_source))
        self.images_root = self._line("folder the file_name values are relative to")
        if kind is Kind.COCO:
            self.form.addRow("Images folder", _path_row(self.images_root, self._browse_root))
        self.category = QComboBox()
        for c in categories:
            self.category.addItem(c.name, c.id)
        if kind is Kind.LABEL_MAPS:
            self.form.addRow("Category", self.category)
        elif kind is Kind.ROIS:
            self.category.setToolTip("For ROIs without a 'category' property")
            self.form.addRow("Category", self.category)
        self.status = QComboBox()
        self.status.addItem("done (training data)", ImageStatus.DONE)
        self.status.addItem("proposed (to review, like model proposals)", ImageStatus.PROPOSED)
        self.form.addRow("Imported images are", self.status)
        self.replace = QCheckBox("Replace the instances of images that already have some")
        self.replace.setToolTip("Unticked, images that already have instances are skipped")
        self.form.addRow("", self.replace)
        self._finish()

    def _browse_source(self) -> None:
        if self.kind is Kind.COCO:
            path, _ = QFileDialog.getOpenFileName(
                self, "COCO instances file", self.source.text(), "COCO JSON (*.json)"
            )
        else:
            path = QFileDialog.getExistingDirectory(self, f"Folder of {self.kind.value}")
        if path:
            self.source.setText(path)
            if self.kind is Kind.COCO and not self.images_root.text():
                self.images_root.setText(str(Path(path).parent))

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Images folder", self.images_root.text())
        if folder:
            self.images_root.setText(folder)

    def _complete(self) -> bool:
        if self.kind is Kind.COCO:
            return _existing(self.source, folder=False) and _existing(self.images_root, folder=True)
        return _existing(self.source, folder=True)

    def choice(self) -> ImportChoice:
        root = self.images_root.text()
        return ImportChoice(
            kind=self.kind,
            source=Path(self.source.text()).expanduser(),
            images_root=Path(root).expanduser() if root and self.kind is Kind.COCO else None,
            status=ImageStatus(self.status.currentData()),
            replace=self.replace.isChecked(),
            category_id=(
                self.category.currentData() if self.kind in (Kind.LABEL_MAPS, Kind.ROIS) else None
            ),
        )


@dataclass(frozen=True)
class ExportChoice:
    kind: Kind
    target: Path  # COCO file, or folder for label maps
    statuses: list[ImageStatus] = field(default_factory=lambda: [ImageStatus.DONE])
    overwrite: bool = False


class ExportDialog(_Form):
    def __init__(self, kind: Kind, parent: QWidget | None = None) -> None:
        super().__init__(f"Export {kind.value}", parent)
        self.kind = kind
        what = "COCO JSON file to write" if kind is Kind.COCO else "folder of its own"
        self.target = self._line(what)
        self.form.addRow("To", _path_row(self.target, self._browse))
        self.status_boxes: dict[ImageStatus, QCheckBox] = {}
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for status in ImageStatus:
            box = QCheckBox(status.value.replace("_", " "))
            box.setChecked(status == ImageStatus.DONE)
            box.toggled.connect(lambda _: self._update())
            layout.addWidget(box)
            self.status_boxes[status] = box
        self.form.addRow("Images", row)
        self.overwrite = QCheckBox("Replace existing files")
        self.overwrite.setToolTip("Never the project's database or images")
        self.form.addRow("", self.overwrite)
        self._finish()

    def _browse(self) -> None:
        if self.kind is Kind.COCO:
            path, _ = QFileDialog.getSaveFileName(
                self, "COCO file to write", self.target.text(), "COCO JSON (*.json)"
            )
            if path and Path(path).exists():
                self.overwrite.setChecked(True)  # the file dialog asked already
        else:
            path = QFileDialog.getExistingDirectory(self, f"Folder for the {self.kind.value}")
        if path:
            self.target.setText(path)

    def _complete(self) -> bool:
        named = bool(self.target.text().strip())
        return named and any(b.isChecked() for b in self.status_boxes.values())

    def choice(self) -> ExportChoice:
        return ExportChoice(
            kind=self.kind,
            target=Path(self.target.text()).expanduser(),
            statuses=[s for s, b in self.status_boxes.items() if b.isChecked()],
            overwrite=self.overwrite.isChecked(),
        )
