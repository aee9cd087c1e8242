"""The main window's half that talks to models: background proposals, the Model dock,
model switching and fallback, the Train dialog and the Model versions window.

A mixin of :class:`app.ui.main_window.MainWindow` (it uses the window's store, editor,
panels and status bar), kept apart so the window module stays about wiring the editor.
"""

from __future__ import annotations

import dataclasses
import logging

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from app.core.types import ImageStatus
from app.errors import MaskLoopError
from app.ml.versions import DEFAULT_MODEL, set_active_model

from .assist_session import AssistSession
from .model_entries import model_entries
from .panels.model_panel import ModelEntry, ModelPanel
from .preferences import settings
from .screen_fit import center_on, clamp_to_screen
from .train_dialog import TrainDialog
from .workers import (
    ModelChoice,
    ProposalController,
    ProposalResult,
    WorkerFailure,
)

log = logging.getLogger(__name__)

# The versions and analytics tables need about this much width to show their columns.
VERSIONS_MIN_WIDTH = 560
VERSIONS_WINDOW_SIZE = (900, 640)


class ModelWiring:
    """Model-related behaviour of the main window."""

    # -- background proposals -----------------------------------------------------------------

    def attach_proposals(
        self, controller: ProposalController, entries: list[ModelEntry], *, cuda: bool = False
    ) -> None:
        """Show proposals from ``controller`` and let the model dock drive it."""
        self.proposals = controller
        self.model_panel = ModelPanel(entries, controller.choice, cuda_available=cuda)
        dock = self._dock("Model", self.model_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.view_menu.addAction(dock.toggleViewAction())
        p = self.model_panel
        p.choice_changed.connect(self.set_model)
        p.choice_changed.connect(lambda _choice: self.versions.refresh())
        p.propose_all_requested.connect(self.propose_all)
        p.cancel_requested.connect(controller.cancel_batch)
        controller.status_changed.connect(self._worker_status)
        controller.batch_progress.connect(p.show_progress)
        controller.batch_finished.connect(p.batch_finished)
        controller.batch_finished.connect(lambda _: self.images.refresh())
        controller.proposals_ready.connect(self._proposals_ready)
        controller.failed.connect(self._worker_failed)
        controller.notice.connect(lambda text: self.statusBar().showMessage(text, 10000))
        controller.model_failed.connect(self._model_error)
        self.assists = AssistSession(self.editor, controller)
        self.assists.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.current_image_changed.connect(self._request_proposals)
        current = self.current_image_id()
        if current is not None:
            self._request_proposals(current)

    def set_model(self, choice: ModelChoice) -> None:
        """Switch model or device: queued work is dropped, untouched images re-proposed."""
        if self.proposals is None or choice == self.proposals.choice:
            return
        settings().setValue("model/device", choice.device)
        if choice.model_id != self.proposals.choice.model_id:
            try:
                set_active_model(self.store, choice.model_id)
            except MaskLoopError as exc:  # e.g. its card was deleted since the list was made
                self.statusBar().showMessage(str(exc), 10000)
                return
            self._fallback_model = self.proposals.choice.model_id
        self.proposals.set_model(choice)
        current = self.current_image_id()
        if current is not None:
            self._request_proposals(current)
        # Re-propose every image nobody has touched with the new model, in the background.
        self.propose_all()

    def show_train_dialog(self) -> None:
        if self._train_dialog is None:
            self._train_dialog = TrainDialog(self.store, self)
            self._train_dialog.version_registered.connect(self._version_registered)
            self._train_dialog.version_activated.connect(self._use_model)
        if not self._train_dialog.process.is_running():
            self._train_dialog.refresh()  # done count and versions may have changed
        self._train_dialog.show()
        clamp_to_screen(self._train_dialog, self)
        self._train_dialog.raise_()
        self._train_dialog.activateWindow()

    def show_versions(self) -> None:
        """The versions panel, in its own window when its dock is too narrow for the tables."""
        dock = self.versions_dock
        if not dock.isFloating() and dock.width() < VERSIONS_MIN_WIDTH:
            dock.setFloating(True)
            dock.resize(VERSIONS_WINDOW_SIZE[0], VERSIONS_WINDOW_SIZE[1])
            center_on(dock, self)
        elif dock.isFloating():
            clamp_to_screen(dock, self)
        dock.show()
        dock.raise_()
        self.versions.refresh()

    def _version_registered(self, number: int) -> None:
        """A version was registered (not active: the Train dialog compares it first)."""
        model_id = f"v{number}"
        self.versions.refresh()
        if self.proposals is not None and self.model_panel is not None:
            self.model_panel.set_entries(model_entries(self.store), self.proposals.choice)
        self.statusBar().showMessage(f"Model version {model_id} registered.", 8000)

    def _use_model(self, model_id: str) -> None:
        """A version became active: propose with it (untouched images are re-proposed)."""
        if self.proposals is None or self.model_panel is None:
            return
        choice = dataclasses.replace(self.proposals.choice, model_id=model_id)
        self.model_panel.set_entries(model_entries(self.store), choice)  # blocks its signals
        self.set_model(choice)
        self.versions.refresh()

    def propose_all(self) -> None:
        if self.proposals is not None:
            todo = self.store.images(status=(ImageStatus.NEW, ImageStatus.PROPOSED))
            self.proposals.propose_all([r.id for r in todo])

    def _request_proposals(self, image_id: int) -> None:
        if self.proposals is None:
            return
        ids = self.images.ids()
        upcoming = ids[ids.index(image_id) + 1 :] if image_id in ids else []
        self.proposals.set_current(image_id, upcoming)

    def _proposals_ready(self, result: ProposalResult) -> None:
        if not result.stored:
            return
        self.images.update_status(result.image_id)
        if result.image_id == self.current_image_id():
            self._refresh_when_idle()

    def _annotator_busy(self) -> bool:
        """A stroke, drag or polygon is under way: new proposals wait until it is over."""
        drawing = self.canvas.tool.in_progress
        return drawing or QApplication.mouseButtons() != Qt.MouseButton.NoButton

    def _refresh_when_idle(self) -> None:
        if self._annotator_busy():
            self._refresh_timer.start()
            return
        self._refresh_timer.stop()
        selected = self.canvas.selection()
        self.refresh_current_instances()
        still_there = [i for i in selected if self.editor.doc and i in self.editor.doc.instances]
        if still_there:
            self.canvas.set_selection(still_there)

    def _worker_status(self, status) -> None:
        if self.model_panel is not None:
            self.model_panel.show_status(status)
        text = f"{status.model_id}: {status.state}"
        if status.queue_length:
            text += f", {status.queue_length} queued"
        if status.device_name.lower().startswith("cpu") and status.last_seconds is not None:
            text += f" (CPU, {status.last_seconds:.1f} s/image)"
        self.model_status.setText(text)

    def _worker_failed(self, failure: WorkerFailure) -> None:
        where = "" if failure.image_id is None else f" on image {failure.image_id}"
        self.statusBar().showMessage(
            f"Proposal failed{where}: {failure.message} (details in View > Log)", 10000
        )
        self.log_view.appendPlainText(f"Proposal failed{where}: {failure.message}")
        self.log_view.appendPlainText(failure.details)

    def _model_error(self, failing: str, message: str) -> None:
        """A model did not load: say why, and go on with the last model that worked (or the
        bundled one), so proposals do not stop."""
        assert self.proposals is not None
        self._broken_models.add(failing)
        if failing != self.proposals.choice.model_id:  # a late report: already moved on
            log.info("model %s could not be loaded (already replaced)", failing)
            return
        fallback = next(
            (
                m
                for m in (self._fallback_model, DEFAULT_MODEL)
                if m and m not in self._broken_models
            ),
            None,
        )
        if fallback is not None:
            message += f"\n\nProposals go on with {fallback}."
        self.log_view.appendPlainText(message)
        if self.model_panel is not None:
            self.model_panel.eta.setText(f"{failing} could not be loaded.")
        box = QMessageBox(QMessageBox.Icon.Warning, "Model not available", message, parent=self)
        box.setModal(False)
        box.show()
        self._model_box = box
        if fallback is not None:
            self._use_model(fallback)
