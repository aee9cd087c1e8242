"""The File menu: new / open / recent projects, add images (rescan), import and export.

Every operation calls the same core function as its command (``maskloop init``,
``import-coco``, ``import-labels``, ``import-labelme``, ``export-coco``,
``export-labels``), in a worker thread behind a progress dialog
(:func:`.background_task.run_in_background`) that counts what is done; an error is shown
as the command's one-line message and leaves the project as the core function leaves it
(imports are all or nothing). Imports and exports can be cancelled: an import then leaves
the project as it was, an export removes the files it had created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from app.core.coco import export_coco, import_coco
from app.core.coco_options import Crowd, Segmentation
from app.core.imagej_rois import export_rois, import_rois
from app.core.interchange import ImportReport
from app.core.label_maps import export_label_maps, import_label_maps
from app.core.labelme import import_labelme
from app.core.progress import OperationCancelled, Progress
from app.core.scan import ScanReport, scan_folder
from app.core.store import DB_NAME, ProjectStore
from app.core.yolo import export_yolo, import_yolo
from app.errors import MaskLoopError

from .background_task import run_in_background
from .interchange_dialogs import (
    ExportChoice,
    ExportDialog,
    ImportChoice,
    ImportDialog,
    Kind,
    NewProjectChoice,
    NewProjectDialog,
)
from .preferences import settings
from .welcome import recent_projects

log = logging.getLogger(__name__)

SHOW_SKIPPED = 10
DEFAULT_CATEGORY = "object"


class NotAProjectError(MaskLoopError):
    """The chosen folder holds no MaskLoop project."""


def _skipped_text(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    lines = [f"\nSkipped {len(skipped)}:"] + [f"  {w}: {why}" for w, why in skipped[:SHOW_SKIPPED]]
    if len(skipped) > SHOW_SKIPPED:
        lines.append(f"  ... and {len(skipped) - SHOW_SKIPPED} more")
    return "\n".join(lines)


def scan_summary(report: ScanReport) -> str:
    text = f"{report.added} images added, {report.existing} already in the project"
    if report.missing:
        text += f", {report.missing} missing (hidden until their files come back)"
    if report.reappeared:
        text += f", {report.reappeared} back"
    return text + "." + _skipped_text(report.unreadable)


def import_summary(report: ImportReport) -> str:
    text = (
        f"{report.images} images ({report.images_added} added to the project), "
        f"{report.instances} instances imported."
    )
    if report.categories_added:
        text += " Categories added: " + ", ".join(report.categories_added) + "."
    if report.deleted:
        total = sum(n for _, n in report.deleted)
        text += f" Replaced {total} instances on {len(report.deleted)} images."
    return text + _skipped_text(report.skipped)


def create_project(store: ProjectStore, images: Path, progress) -> ScanReport:
    """``maskloop init`` in the GUI: scan the images; a first category if there is none."""
    report = scan_folder(store, images, progress=progress)
    if not store.categories():
        store.add_category(DEFAULT_CATEGORY)
    return report


def run_import(
    store: ProjectStore, choice: ImportChoice, progress: Progress | None = None
) -> ImportReport:
    if choice.kind is Kind.COCO:
        assert choice.images_root is not None
        return import_coco(
            store,
            choice.source,
            images_root=choice.images_root,
            status=choice.status,
            replace=choice.replace,
            crowd=Crowd.KEEP,  # as import-coco does: crowd regions stay crowd regions
            progress=progress,
        )
    if choice.kind is Kind.LABEL_MAPS:
        return import_label_maps(
            store,
            choice.source,
            category_id=choice.category_id,
            status=choice.status,
            replace=choice.replace,
            progress=progress,
        )
    if choice.kind is Kind.YOLO:
        return import_yolo(
            store, choice.source, status=choice.status, replace=choice.replace, progress=progress
        )
    if choice.kind is Kind.ROIS:
        return import_rois(
            store,
            choice.source,
            category_id=choice.category_id,
            status=choice.status,
            replace=choice.replace,
            progress=progress,
        )
    return import_labelme(
        store, choice.source, status=choice.status, replace=choice.replace, progress=progress
    )


def run_export(store: ProjectStore, choice: ExportChoice, progress: Progress | None = None) -> str:
    """Export and say what was written."""
    options = {"statuses": choice.statuses, "overwrite": choice.overwrite, "progress": progress}
    if choice.kind is Kind.COCO:
        r = export_coco(store, choice.target, segmentation=Segmentation.AUTO, **options)
        text = (
            f"Wrote {r.path}: {r.images} images, {r.instances} instances "
            f"({r.polygon_instances} polygons, {r.rle_instances} RLE); file names relative "
            f"to {r.images_root}."
        )
        return text + _skipped_text(r.skipped)
    if choice.kind is Kind.YOLO:
        y = export_yolo(store, choice.target, **options)
        splits = ", ".join(f"{n} {split}" for split, n in y.images.items())
        text = f"Wrote {y.data_yaml}: {splits} images, {y.instances} instances."
        return text + _skipped_text(y.skipped)
    if choice.kind is Kind.ROIS:
        r = export_rois(store, choice.target, **options)
        text = f"Wrote {r.files} ROI sets ({r.instances} instances) to {r.out_dir}."
        return text + _skipped_text(r.skipped)
    m = export_label_maps(store, choice.target, **options)
    text = f"Wrote {m.images} label maps ({m.instances} instances) to {m.out_dir}."
    if m.overlap_pixels:
        text += f" {m.overlap_pixels} pixels were covered by more than one instance."
    return text + _skipped_text(m.skipped)


class FileMenu(QObject):
    """Fills the window's File menu and runs its operations on the window's project."""

    # (Path, notice): open this project in place of this one, then show the notice there
    project_requested = Signal(object, str)
    project_changed = Signal()  # images, categories or instances changed on disk

    def __init__(
        self,
        parent: QWidget,
        store: ProjectStore,
        menu: QMenu,
        add_action: Callable[..., object],
    ) -> None:
        super().__init__(parent)
        self.parent_widget, self.store = parent, store
        self.last_message = ""
        self._box: QMessageBox | None = None
        add_action("New project\u2026", self.new_project, "Ctrl+N", "mdi.folder-plus", menu)
        add_action("Open project\u2026", self.open_project, "Ctrl+O", "mdi.folder-open", menu)
        self.recent_menu = menu.addMenu("Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._fill_recent()
        menu.addSeparator()
        add_action(
            "Add images / rescan folder\u2026", self.add_images, None, "mdi.image-plus", menu
        )
        imports = menu.addMenu("Import")
        exports = menu.addMenu("Export")
        for kind in Kind:
            add_action(
                f"{kind.value}\u2026", lambda _=False, k=kind: self.import_(k), None, None, imports
            )
        for kind in (Kind.COCO, Kind.LABEL_MAPS, Kind.YOLO, Kind.ROIS):
            add_action(
                f"{kind.value}\u2026", lambda _=False, k=kind: self.export(k), None, None, exports
            )
        menu.addSeparator()

    # -- reporting ----------------------------------------------------------------------------

    def notify(self, title: str, text: str, *, error: bool = False) -> None:
        """Say how an operation went, in a box that does not block the window."""
        self.last_message = text
        icon = QMessageBox.Icon.Warning if error else QMessageBox.Icon.Information
        self._box = QMessageBox(icon, title, text, parent=self.parent_widget)
        self._box.setModal(False)
        self._box.show()

    def _run(
        self,
        title: str,
        text: str,
        project: Path,
        operation,
        *,
        create: bool = False,
        cancelled: str = "",
    ):
        """Run ``operation`` behind the progress dialog; with a ``cancelled`` text (what a
        cancel leaves behind: nothing, or a state that running it again completes) it has
        a Cancel button."""
        try:
            return run_in_background(
                self.parent_widget, project, text, operation, create=create,
                cancellable=bool(cancelled),
            )  # fmt: skip
        except OperationCancelled:
            log.info("%s cancelled", title)
            self.notify(title, cancelled)
        except MaskLoopError as exc:
            log.info("%s failed: %s", title, exc)
            self.notify(title, str(exc), error=True)
        except Exception as exc:
            log.exception("%s failed", title)
            self.notify(
                title, f"{title} failed unexpectedly: {exc}. Details are in the log.", error=True
            )
        return None

    # -- projects -----------------------------------------------------------------------------

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        paths = [p for p in recent_projects(settings()) if p != self.store.root]
        for path in paths:
            action = self.recent_menu.addAction(f"{path.name}  \u2014  {path}")
            action.triggered.connect(lambda _=False, p=path: self.project_requested.emit(p, ""))
        self.recent_menu.setEnabled(bool(paths))

    def new_project(self) -> None:
        dialog = NewProjectDialog(self.parent_widget)
        if dialog.exec():
            self.create(dialog.choice())

    def create(self, choice: NewProjectChoice) -> ScanReport | None:
        """Create (or add to) the project folder from the images folder, then open it."""
        report = self._run(
            "New project",
            f"Scanning {choice.images}\u2026",
            choice.project,
            lambda store, progress: create_project(store, choice.images, progress),
            create=True,
            cancelled=(
                f"Scanning stopped: the project {choice.project} holds the images found so "
                "far. Open it and use File > Add images on the same folder to add the rest."
            ),
        )
        if report is not None:
            summary = f"{choice.project}: {scan_summary(report)}"
            self.last_message = summary
            self.project_requested.emit(choice.project, summary)  # shown by the new window
        return report

    def open_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self.parent_widget, f"Project folder (holds {DB_NAME})", str(self.store.root.parent)
        )
        if folder:
            self.open(Path(folder))

    def open(self, folder: Path) -> bool:
        if not (folder / DB_NAME).exists():
            self.notify(
                "Open project",
                str(
                    NotAProjectError(
                        f"{folder} holds no MaskLoop project ({DB_NAME}); choose the project "
                        "folder, or make one with File > New project."
                    )
                ),
                error=True,
            )
            return False
        self.project_requested.emit(folder, "")
        return True

    def add_images(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self.parent_widget, "Folder of images to add (or rescan)", str(self.store.root)
        )
        if folder:
            self.rescan(Path(folder))

    def rescan(self, folder: Path) -> ScanReport | None:
        """``maskloop init`` again: new images added, gone ones flagged missing."""
        report = self._run(
            "Add images",
            f"Scanning {folder}\u2026",
            self.store.root,
            lambda store, progress: scan_folder(store, folder, progress=progress),
            cancelled=(
                "Scanning stopped: the images found so far were added, none was flagged "
                "missing. Add the same folder again to add the rest."
            ),
        )
        if report is not None:
            self.notify("Add images", scan_summary(report))
            self.project_changed.emit()
        return report

    # -- interchange --------------------------------------------------------------------------

    def import_(self, kind: Kind) -> None:
        dialog = ImportDialog(kind, self.store.categories(), self.parent_widget)
        if dialog.exec():
            self.run_import(dialog.choice())

    def run_import(self, choice: ImportChoice) -> ImportReport | None:
        title = f"Import {choice.kind.value}"
        report = self._run(
            title,
            f"Importing {choice.source}\u2026",
            self.store.root,
            lambda store, progress: run_import(store, choice, progress),
            cancelled="Import cancelled: nothing was imported, the project is as it was.",
        )
        if report is not None:
            self.notify(title, import_summary(report))
            self.project_changed.emit()
        return report

    def export(self, kind: Kind) -> None:
        dialog = ExportDialog(kind, self.parent_widget)
        if dialog.exec():
            self.run_export(dialog.choice())

    def run_export(self, choice: ExportChoice) -> str | None:
        title = f"Export {choice.kind.value}"
        text = self._run(
            title,
            f"Exporting to {choice.target}\u2026",
            self.store.root,
            lambda store, progress: run_export(store, choice, progress),
            cancelled=(
                "Export cancelled: the files it had created were removed"
                + (" (files it had already replaced stay replaced)." if choice.overwrite else ".")
            ),
        )
        if text is not None:
            self.notify(title, text)
        return text
