"""Start the GUI, and render the main window headless for screenshots."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from app.core.store import ProjectStore, StoreError
from app.errors import MaskLoopError
from app.paths import resources_dir

from .main_window import MainWindow
from .preferences import APP, ORG, settings
from .qt_libs import check_qt_libraries
from .welcome import WelcomeDialog, remember_project

log = logging.getLogger(__name__)


class ScreenshotError(MaskLoopError):
    """The screenshot could not be rendered or written."""


def application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setOrganizationName(ORG)
        app.setApplicationName(APP)
        app.setDesktopFileName("maskloop")  # matches resources/maskloop.desktop
        icon = resources_dir() / "icons" / "maskloop.svg"
        if icon.exists():
            app.setWindowIcon(QIcon(str(icon)))
    return app


def _last_project() -> ProjectStore | None:
    last = settings().value("project/last")
    if not last:
        return None
    try:
        return ProjectStore.open(Path(str(last)))
    except StoreError as exc:
        log.info("last project not reopened: %s", exc)
        return None


class Session:
    """The project shown: File > New / Open / Recent replace its window and store."""

    def __init__(self) -> None:
        self.window: MainWindow | None = None
        self.store: ProjectStore | None = None

    def show(self, store: ProjectStore) -> MainWindow:
        """Open a window on ``store``; the previous window closes and its store with it."""
        old_window, old_store = self.window, self.store
        window = MainWindow(store)
        attach_proposals(window, store)
        window.project_requested.connect(self.open_path)
        window.show()
        self.window, self.store = window, store
        if old_window is not None:
            old_window.close()
            old_window.deleteLater()
        if old_store is not None:
            old_store.close()
        remember_project(settings(), store.root)  # after the old window saved its own
        return window

    def open_path(self, folder: Path, notice: str = "") -> None:
        """Open ``folder`` in place of the current project; ``notice`` (e.g. what a new
        project's scan found) is shown in the new window."""
        if self.store is not None and folder.resolve() == self.store.root.resolve():
            return
        try:
            store = ProjectStore.open(folder)
        except MaskLoopError as exc:
            QMessageBox.warning(self.window, "Open project", str(exc))
            return
        window = self.show(store)
        if notice:
            window.file_menu.notify("Project opened", notice)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def run_gui(project: Path | None) -> int:
    """Open ``project`` (or the last one, or ask) and run the event loop."""
    check_qt_libraries()  # a one-line error with the install command, not a Qt abort
    app = application()
    store = ProjectStore.open(project) if project is not None else _last_project()
    if store is None:
        dialog = WelcomeDialog(settings=settings())
        if not dialog.exec() or dialog.store is None:
            return 0
        store = dialog.store
    session = Session()
    try:
        session.show(store)
        # torch, Qt and the window leave ~400k long-lived objects that every full garbage
        # collection would scan again (200+ ms, every few image switches): exempt them.
        gc.freeze()
        return app.exec()
    finally:
        session.close()


def attach_proposals(window: MainWindow, store: ProjectStore) -> None:
    """Start background proposals with the project's active model (never blocks the GUI)."""
    import torch

    from app.ml.versions import active_model

    from .model_entries import model_entries
    from .workers import ModelChoice, ProposalController

    model_id = active_model(store)
    device = str(settings().value("model/device", "auto"))
    choice = ModelChoice(model_id, device)
    controller = ProposalController(
        store.root,
        choice=choice,
        predictor_factory=window.simplify.predictor_factory(),  # outlines at its tolerance
        parent=window,
    )
    window.attach_proposals(controller, model_entries(store), cuda=torch.cuda.is_available())
    if not torch.cuda.is_available():
        window.statusBar().showMessage(
            "No GPU found: proposals run on the CPU in the background (seconds per image).",
            15000,
        )


def screenshot(project: Path, out: Path, *, image: str | None, size: tuple[int, int]) -> Path:
    """Render the main window on ``project`` (optionally showing ``image``) into a PNG."""
    app = application()
    with ProjectStore.open(project) as store:
        window = MainWindow(store)
        window.resize(*size)
        if image is not None:
            record = store.image_by_path(image)
            if record is None:
                window.close()
                raise ScreenshotError(
                    f"no image {image!r} in {store.root}; use its path relative to the project"
                )
            window.open_image(record.id)
        window.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
        window.show()
        app.processEvents()
        window.canvas.fit()
        app.processEvents()
        pixmap = window.grab()
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        window.close()
        app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not pixmap.save(str(out), "PNG"):
        raise ScreenshotError(f"cannot write {out}; check the folder exists and is writable")
    return out
