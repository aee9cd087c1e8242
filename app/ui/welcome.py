"""Start-up without a project: reopen the last one, or offer to create, open or try the demo."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.store import DB_NAME, ProjectStore
from app.errors import MaskLoopError

DEMO_FOLDER = Path.home() / "MaskLoop" / "demo"
RECENT_KEY = "project/recent"
MAX_RECENT = 8


def recent_projects(settings: QSettings) -> list[Path]:
    """Recently opened projects that still exist, most recent first."""
    stored = settings.value(RECENT_KEY) or []
    paths = [Path(p) for p in ([stored] if isinstance(stored, str) else stored)]
    return [p for p in paths if (p / DB_NAME).exists()]


def remember_project(settings: QSettings, root: Path) -> None:
    """Put ``root`` first in the recent list (and make it the one reopened at start-up)."""
    others = [str(p) for p in recent_projects(settings) if p != root]
    settings.setValue(RECENT_KEY, [str(root), *others][:MAX_RECENT])
    settings.setValue("project/last", str(root))


def create_from_folder(
    images: Path, project: Path, *, parent: QWidget | None = None
) -> ProjectStore:
    """A project in ``project`` (created if needed) holding the images under ``images``;
    the scan runs in the background behind a progress dialog."""
    from .background_task import run_in_background
    from .file_menu import create_project

    run_in_background(
        parent,
        project,
        f"Scanning {images}\u2026",
        lambda store, progress: create_project(store, images, progress),
        create=True,
    )
    return ProjectStore.open(project)


def open_demo(folder: Path = DEMO_FOLDER) -> ProjectStore:
    from app.demo.project import create_demo_project  # torch-free, but only needed here

    return create_demo_project(folder)


class WelcomeDialog(QDialog):
    """Recent projects and three buttons; :attr:`store` holds the opened project after
    ``accept()``."""

    def __init__(self, parent: QWidget | None = None, settings: QSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("MaskLoop")
        self.store: ProjectStore | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>MaskLoop</h2>Open a project to start annotating."))
        self.recent = QListWidget()
        self.recent.setToolTip("Double-click (or Enter) to open a recent project")
        for path in recent_projects(settings or QSettings()):
            item = QListWidgetItem(f"{path.name}  —  {path}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.recent.addItem(item)
        if self.recent.count():
            layout.addWidget(QLabel("Recent projects"))
            layout.addWidget(self.recent)
            self.recent.itemActivated.connect(self._open_recent)
        else:
            self.recent.hide()
        for text, slot in (
            ("Create a project from an image folder...", self._create),
            ("Open a project...", self._open),
            ("Open the demo project (synthetic nuclei)", self._demo),
        ):
            b = QPushButton(text)
            b.clicked.connect(slot)
            layout.addWidget(b)

    def _try(self, fn) -> None:
        try:
            self.store = fn()
        except MaskLoopError as exc:
            QMessageBox.warning(self, "MaskLoop", str(exc))
            return
        self.accept()

    def _create(self) -> None:
        from .interchange_dialogs import NewProjectDialog  # the File menu's form

        form = NewProjectDialog(self)
        if form.exec():
            choice = form.choice()
            self._try(lambda: create_from_folder(choice.images, choice.project, parent=self))

    def _open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, f"Project folder (holds {DB_NAME})")
        if folder:
            self._try(lambda: ProjectStore.open(folder))

    def _demo(self) -> None:
        self._try(open_demo)

    def _open_recent(self, item: QListWidgetItem) -> None:
        folder = item.data(Qt.ItemDataRole.UserRole)
        self._try(lambda: ProjectStore.open(folder))
