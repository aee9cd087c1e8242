"""The Train dialog: fine-tune a model on the done images without leaving the app.

Training runs as ``maskloop train ... --events-json`` in a subprocess (:mod:`.train_process`);
the dialog reads its events for the progress bar and the live loss / validation AP plots.
A registered version never becomes active by itself: the dialog measures it and the active
model on the same validation images (:mod:`.model_comparison`) and activates it only when it
scores at least as well (and the person left that ticked), or when the person presses
"Make it active" after seeing both figures. Training with categories other than the base
model's asks first: the box and mask heads then start from scratch.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import qtawesome as qta
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QTextCursor
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.store import ProjectStore
from app.core.types import ImageStatus
from app.errors import MaskLoopError
from app.ml.categories import categories_keeping_heads
from app.ml.defaults import FINE_TUNE_BATCH_SIZE, FINE_TUNE_EPOCHS
from app.ml.devices import DEVICE_CHOICES
from app.ml.metric_keys import BBOX_AP, SEGM_AP, SEGM_AP50
from app.ml.train import CHECKPOINT_DIR, CHECKPOINT_NAME
from app.ml.train_events import EpochEvent, FinishedEvent, IterationEvent, TrainEvent
from app.ml.versions import MODELS_DIR, active_model, set_active_model
from app.ml.zoo import get_card, list_cards

from .durations import format_duration
from .model_comparison import Comparison, ComparisonProcess
from .plot import LinePlot
from .train_process import Outcome, TrainProcess, TrainResult

__all__ = ["Outcome", "TrainDialog", "TrainOptions", "TrainResult", "checkpoint_path"]

log = logging.getLogger(__name__)


def checkpoint_path(project: Path) -> Path:
    return project / MODELS_DIR / CHECKPOINT_DIR / CHECKPOINT_NAME


@dataclass
class TrainOptions:
    """What the user chose; ``resume`` is None when there is no interrupted run."""

    base_model: str | None = None
    epochs: int = FINE_TUNE_EPOCHS
    batch_size: int = FINE_TUNE_BATCH_SIZE
    device: str = "auto"
    max_iters: int | None = None
    name: str = ""
    activate_if_better: bool = True
    resume: bool | None = None

    def arguments(self, project: Path) -> list[str]:
        """The ``maskloop train`` arguments for these options (``--events-json`` included).

        Always ``--no-activate``: the dialog decides on activation after comparing."""
        args = ["train", str(project)]
        if self.resume:
            args.append("--resume")  # the interrupted run's base model is used
        else:
            if self.base_model:
                args += ["--base-model", self.base_model]
            if self.resume is False:
                args.append("--restart")
        args += ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size)]
        args += ["--device", self.device]
        if self.max_iters:
            args += ["--max-iters", str(self.max_iters)]
        if self.name:
            args += ["--name", self.name]
        args += ["--no-activate", "--events-json"]
        return args


# The trainer's messages for a terminal, as the dialog's buttons say them.
_GUI_WORDING = (
    (
        re.compile(r"\(Ctrl-C again to abort without a checkpoint\)"),
        "(Stop now: end at once, no checkpoint)",
    ),
    (re.compile(r"Continue with: maskloop train \S+ --resume"), "Press Train to continue it."),
    (
        re.compile(r"; start over with --restart"),
        "; untick 'Continue the interrupted run' to start over",
    ),
)


def gui_wording(text: str) -> str:
    """Trainer output with its command-line hints put in terms of the dialog."""
    for pattern, replacement in _GUI_WORDING:
        text = pattern.sub(replacement, text)
    return text


def _metric_text(metrics: dict[str, float]) -> str:
    parts = [
        f"{label} {metrics[key]:.3f}"
        for key, label in ((SEGM_AP, "segm AP"), (SEGM_AP50, "AP50"), (BBOX_AP, "box AP"))
        if key in metrics
    ]
    return ", ".join(parts)


class TrainDialog(QDialog):
    """Choose a base model and options, train in a subprocess, watch it, get a new version."""

    version_registered = Signal(int)
    version_activated = Signal(str)  # the dialog made this version the active model
    run_finished = Signal(object)  # TrainResult
    comparison_finished = Signal(object)  # Comparison, after the activation decision

    def __init__(
        self, store: ProjectStore, parent: QWidget | None = None, *, python: str = sys.executable
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.setWindowTitle("Train a model")
        self.setWindowIcon(qta.icon("mdi.school"))
        self.process = TrainProcess(python, self)
        self.comparison = ComparisonProcess(python, self)
        self.comparison.finished.connect(self._on_compared)
        self._candidate: str | None = None  # registered, not active, waiting for a decision
        self._trained = (0, 0)  # the progress bar at the end of training (iterations)
        self._device = "auto"
        self._build()
        self.process.event.connect(self._on_event)
        self.process.stderr.connect(self._on_stderr)
        self.process.finished.connect(self._on_finished)
        app_instance = QApplication.instance()
        if app_instance is not None:
            app_instance.aboutToQuit.connect(self.process.shutdown)
        self.refresh()

    # -- construction ---------------------------------------------------------------------------

    def _build(self) -> None:
        self.base = QComboBox()
        self.base.setToolTip("The model training starts from: a project version or a zoo model")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(FINE_TUNE_EPOCHS)
        self.epochs.setToolTip("Passes over the training images")
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(FINE_TUNE_BATCH_SIZE)
        self.batch.setToolTip("Images per step (per GPU); lower it if memory runs out")
        self.device = QComboBox()
        self.device.addItems(DEVICE_CHOICES)
        self.device.setToolTip("auto uses a CUDA GPU when there is one, else the CPU")
        self.max_iters = QSpinBox()
        self.max_iters.setRange(0, 1_000_000)
        self.max_iters.setSpecialValueText("all epochs")
        self.max_iters.setToolTip("Stop after this many steps (quick trials); 0 runs all epochs")
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional, e.g. 'after batch 3'")
        self.activate = QCheckBox(
            "Make it the active model if it scores at least as well as the active model"
        )
        self.activate.setToolTip(
            "After training, the new version and the active model are measured on the same "
            "validation images. Unticked, or if the new version scores lower, the active model "
            "stays; you can still make the new version active here or in Model versions."
        )
        self.activate.setChecked(True)
        self.heads_label = QLabel()
        self.heads_label.setWordWrap(True)
        self.heads_label.setStyleSheet("color: #ef6c00;")
        self.base.currentIndexChanged.connect(lambda _: self._show_heads_warning())
        self.resume = QCheckBox("Continue the interrupted run from its checkpoint")
        self.resume.setToolTip(
            "A stopped run left a checkpoint. Unchecked, it is discarded and training starts over."
        )
        self.resume.toggled.connect(lambda on: self.base.setEnabled(not on))
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Start from", self.base)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Device", self.device)
        form.addRow("Max. iterations", self.max_iters)
        form.addRow("Version name", self.name)
        form.addRow("", self.activate)
        form.addRow("", self.resume)
        form.addRow("Trains on", self.data_label)
        form.addRow("", self.heads_label)
        self.form = QWidget()
        self.form.setLayout(form)

        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m iterations")
        self.progress_label = QLabel("Not started.")
        self.loss_plot = LinePlot("Training loss", "iteration")
        self.ap_plot = LinePlot("Validation AP (masks)", "epoch", y_range=(0.0, 1.0))
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.ap_plot)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumBlockCount(5000)
        self._toggle_details(False)
        self.details_button.toggled.connect(self._toggle_details)

        self.start_button = QPushButton(qta.icon("mdi.play"), "Train")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton(qta.icon("mdi.stop"), "Stop")
        self.stop_button.setToolTip("Stop after this iteration; nothing is registered")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        self.activate_button = QPushButton(qta.icon("mdi.check-decagram"), "Make it active")
        self.activate_button.setToolTip("Propose with the new version from now on")
        self.activate_button.clicked.connect(self.activate_candidate)
        self.activate_button.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.details_button)
        buttons.addStretch(1)
        for b in (self.activate_button, self.start_button, self.stop_button, self.close_button):
            buttons.addWidget(b)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addLayout(plots, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.details, 1)
        layout.addLayout(buttons)
        self.resize(720, 640)

    def _toggle_details(self, shown: bool) -> None:
        self.details.setVisible(shown)
        arrow = Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        self.details_button.setArrowType(arrow)

    # -- state ----------------------------------------------------------------------------------

    def done_count(self) -> int:
        return self.store.count_images(ImageStatus.DONE)

    def refresh(self) -> None:
        """Re-read models, done images and any interrupted run from the project."""
        current = self.base.currentData()
        self.base.clear()
        active = active_model(self.store)
        ids: list[str] = []
        for v in reversed(self.store.model_versions()):
            label = f"v{v.id}" + (f" \u2013 {v.name}" if v.name else "")
            if SEGM_AP in v.metrics:
                label += f" (segm AP {v.metrics[SEGM_AP]:.3f})"
            self.base.addItem(label, f"v{v.id}")
            ids.append(f"v{v.id}")
        for card in list_cards():
            self.base.addItem(f"{card.id} \u2013 {card.title}", card.id)
            ids.append(card.id)
        if active not in ids:
            self.base.addItem(active, active)
        for k in range(self.base.count()):
            if self.base.itemData(k) == active:
                self.base.setItemText(k, self.base.itemText(k) + "  [active]")
        wanted = current if current in ids else active
        self.base.setCurrentIndex(max(0, self.base.findData(wanted)))
        has_checkpoint = checkpoint_path(self.store.root).exists()
        self.resume.setVisible(has_checkpoint)
        self.resume.setChecked(has_checkpoint)
        self.base.setEnabled(not has_checkpoint)
        n = self.done_count()
        if n:
            self.data_label.setText(
                f"{n} done image{'s' if n != 1 else ''} (a share of them is held out to "
                "measure AP; the split stays fixed as images are added)"
            )
        else:
            self.data_label.setText(
                "No images are marked done yet. Review some images and mark them done "
                "(Ctrl+Enter), then train."
            )
        self._show_heads_warning()
        self._set_running(self.busy())

    def heads_warning(self) -> str:
        """Why training from the chosen base starts its heads from scratch ('' if it does not)."""
        base = self.base.currentData()
        if not base or (self.resume.isVisibleTo(self) and self.resume.isChecked()):
            return ""
        try:
            card = get_card(base, self.store.root)
        except MaskLoopError:
            return ""
        project = self.store.categories()
        if categories_keeping_heads(card.categories, project) is not None:
            return ""
        names = ", ".join(c.name for c in project) or "none"
        theirs = ", ".join(c.name for c in card.categories)
        return (
            f"The project's categories ({names}) differ from {base}'s ({theirs}): the box and "
            "mask heads start from scratch, so a short run on few images scores far lower than "
            f"{base}. Train many epochs on many done images; the new version only becomes "
            "active if it scores at least as well."
        )

    def _show_heads_warning(self) -> None:
        text = self.heads_warning()
        self.heads_label.setText(text)
        self.heads_label.setVisible(bool(text))

    def busy(self) -> bool:
        """Training or measuring runs."""
        return self.process.is_running() or self.comparison.is_running()

    def options(self) -> TrainOptions:
        return TrainOptions(
            base_model=self.base.currentData(),
            epochs=self.epochs.value(),
            batch_size=self.batch.value(),
            device=self.device.currentText(),
            max_iters=self.max_iters.value() or None,
            name=self.name.text().strip(),
            activate_if_better=self.activate.isChecked(),
            resume=self.resume.isChecked() if self.resume.isVisibleTo(self) else None,
        )

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.start_button.setEnabled(not running and self.done_count() > 0)
        self.start_button.setToolTip(
            "" if self.done_count() else "Mark at least one image done to train on it"
        )
        self.stop_button.setEnabled(running)
        self.stop_button.setText("Stop")
        self.close_button.setEnabled(not running)

    def _show_status(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet("color: #e53935;" if error else "")
        self.status.setText(text)

    # -- actions --------------------------------------------------------------------------------

    def start(self) -> None:
        if self.process.is_running():
            return
        if self.done_count() == 0:
            self._show_status(
                "Nothing to train on: no image is marked done. Review images and mark them done "
                "(Ctrl+Enter) first.",
                error=True,
            )
            return
        warning = self.heads_warning()
        if warning and not self._confirm(warning):
            return
        self._candidate = None
        self.activate_button.hide()
        self._device = self.device.currentText()
        self.loss_plot.clear()
        self.ap_plot.clear()
        self.details.clear()
        self.progress.setRange(0, 0)  # busy until the first iteration reports its total
        self.progress_label.setText("Loading the model and the images\u2026")
        self._show_status("")
        self._set_running(True)
        self.process.start(self.options().arguments(self.store.root))

    def _confirm(self, warning: str) -> bool:
        """Ask before a run whose heads start from scratch."""
        answer = QMessageBox.question(
            self,
            "New box and mask heads",
            warning + "\n\nTrain anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    def stop(self) -> None:
        """First press: stop after this iteration, keeping a checkpoint. Second: kill now.
        While the new version is being measured: stop measuring (it stays inactive)."""
        if self.comparison.is_running():
            self.comparison.kill()
            return
        if not self.process.is_running():
            return
        if self.process.stop_requested():
            self.process.kill()
            return
        self.process.stop()
        self.stop_button.setText("Stop now")
        self.stop_button.setToolTip("End the training process at once")
        self.progress_label.setText("Stopping after this iteration\u2026")

    def _refuse_close(self) -> bool:
        """While training runs the window stays: closing it must not lose the run."""
        if self.busy():
            self._show_status("Training is running: stop it before closing this window.")
        return self.busy()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        event.ignore() if self._refuse_close() else super().closeEvent(event)

    def reject(self) -> None:
        if not self._refuse_close():
            super().reject()

    # -- events ---------------------------------------------------------------------------------

    def _on_event(self, event: TrainEvent) -> None:
        if isinstance(event, IterationEvent):
            total, it = event.total_iterations, event.iteration
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(it)
            self.loss_plot.add_point("loss", it, event.loss)
            if not self.process.stop_requested():
                self.progress_label.setText(
                    f"Epoch {event.epoch + 1}, iteration {it} of {total}, "
                    f"loss {event.loss:.3f}, {event.images_per_s:.2f} images/s, "
                    f"about {format_duration(event.eta_s)} left"
                )
        elif isinstance(event, EpochEvent):
            metrics = event.metrics
            x = event.epoch + 1
            for key, series in ((SEGM_AP, "AP"), (SEGM_AP50, "AP50")):
                if key in metrics:
                    self.ap_plot.add_point(series, x, metrics[key])
            if metrics:
                self.progress_label.setText(f"Epoch {x} evaluated: {_metric_text(metrics)}")
        elif isinstance(event, FinishedEvent) and not event.cancelled:
            self.progress_label.setText("Training done; registering the new version\u2026")

    def _on_stderr(self, text: str) -> None:
        self.details.moveCursor(QTextCursor.MoveOperation.End)
        self.details.insertPlainText(gui_wording(text))

    def _on_finished(self, result: TrainResult) -> None:
        if self.progress.maximum() == 0:  # ended before the first iteration
            self.progress.setRange(0, 1)
        registered = result.outcome is Outcome.REGISTERED and result.version is not None
        if registered:
            candidate, active = f"v{result.version}", active_model(self.store)
            metrics = _metric_text(result.metrics)
            self._show_status(
                f"Registered model version {candidate}"
                + (f" (training validation: {metrics})" if metrics else "")
                + f". Measuring it and the active model {active} on the same validation "
                "images…"
            )
            self.progress_label.setText("Comparing with the active model…")
            self._trained = (self.progress.value(), self.progress.maximum())
            self.progress.setRange(0, 0)
            self._candidate = candidate
        elif result.outcome is Outcome.CANCELLED:
            kept = checkpoint_path(self.store.root).exists()
            self._show_status(
                result.message
                + (" The checkpoint is kept: Train again to continue it." if kept else "")
            )
            self.progress_label.setText("Stopped.")
        else:
            tail = f"\n\n{gui_wording(result.stderr_tail)}" if result.stderr_tail else ""
            self._show_status(f"Training failed: {result.message}{tail}", error=True)
            self.progress_label.setText("Failed.")
            self.details_button.setChecked(True)
        if registered:
            self.comparison.start(self.store.root, candidate, active, self._device)
        self.refresh()
        self.run_finished.emit(result)
        if registered:
            self.version_registered.emit(result.version)

    def _on_compared(self, comparison: Comparison) -> None:
        """Activate the candidate only if it is at least as good and the person allows it."""
        _, total = self._trained
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(max(total, 1))  # the run's iterations, all done
        self.progress_label.setText("Finished.")
        c = comparison.candidate
        if comparison.candidate_at_least_as_good and self.activate.isChecked():
            self._activate(c)
            self._show_status(f"{comparison.summary()} {c} is now the active model.")
        else:
            if not comparison.measured:
                why = "it could not be compared, so"
            elif comparison.candidate_at_least_as_good:
                why = "activation after training was unticked, so"
            else:
                why = "it scores lower, so"
            self._show_status(
                f"{comparison.summary()} {c} is registered but not active: {why} "
                f"{comparison.active} keeps proposing. “Make it active” switches "
                "anyway.",
                error=not comparison.measured,
            )
            self.activate_button.setText(f"Make {c} active")
            self.activate_button.show()
        self.refresh()
        self.comparison_finished.emit(comparison)

    def activate_candidate(self) -> None:
        """The person chose the new version after seeing both figures."""
        chosen = self._candidate
        if chosen is not None and self._activate(chosen):
            self._show_status(f"{chosen} is now the active model (your choice).")

    def _activate(self, model_id: str) -> bool:
        try:
            set_active_model(self.store, model_id)
        except MaskLoopError as exc:
            self._show_status(str(exc), error=True)
            return False
        self._candidate = None
        self.activate_button.hide()
        log.info("%s is now the active model", model_id)
        self.refresh()  # the [active] mark moves
        self.version_activated.emit(model_id)
        return True
