"""The Train dialog: fine-tune a model on the done images without leaving the app.

Training runs as ``python -m app.cli train PROJECT ... --events-json`` in a QProcess, so the
GUI stays responsive, a crash cannot take the annotations with it, and the GUI shares the
command line's checkpointing, resume and all-or-nothing registration. The dialog reads the
JSON event lines for the progress bar and the live loss / validation AP plots; everything
on stderr goes to the details box. Stop sends SIGINT: the trainer finishes the iteration,
keeps a checkpoint and registers nothing (a second Stop kills the process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import qtawesome as qta
from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Qt, QTimer, Signal
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
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import app
from app.core.store import ProjectStore
from app.core.types import ImageStatus
from app.errors import MaskLoopError
from app.ml.train import CHECKPOINT_DIR, CHECKPOINT_NAME
from app.ml.versions import MODELS_DIR, active_model
from app.ml.zoo import list_cards

from .plot import LinePlot

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
STDERR_KEEP_CHARS = 200_000
STDERR_TAIL_LINES = 15
STOP_GRACE_MS = 120_000


class TrainProcessError(MaskLoopError):
    """The training subprocess cannot be started as asked."""


def checkpoint_path(project: Path) -> Path:
    return project / MODELS_DIR / CHECKPOINT_DIR / CHECKPOINT_NAME


@dataclass
class TrainOptions:
    """What the user chose; ``resume`` is None when there is no interrupted run."""

    base_model: str | None = None
    epochs: int = 10
    batch_size: int = 2
    device: str = "auto"
    max_iters: int | None = None
    name: str = ""
    activate: bool = True
    resume: bool | None = None

    def arguments(self, project: Path) -> list[str]:
        """The ``maskloop train`` arguments for these options (``--events-json`` included)."""
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
        if not self.activate:
            args.append("--no-activate")
        args.append("--events-json")
        return args


class Outcome(StrEnum):
    REGISTERED = "registered"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass
class TrainResult:
    """How a run ended, with what the user needs to understand it."""

    outcome: Outcome
    message: str
    version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    stderr_tail: str = ""


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class TrainProcess(QObject):
    """One ``maskloop train --events-json`` subprocess, its events parsed as they arrive."""

    event = Signal(dict)  # one decoded JSON event line
    stderr = Signal(str)  # text as it arrives
    finished = Signal(object)  # TrainResult

    def __init__(self, python: str = sys.executable, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.python = python
        self._proc: QProcess | None = None
        self._out, self._err, self._err_chars = b"", [], 0
        self._registered: dict[str, Any] | None = None
        self._error: str | None = None
        self._cancelled_event = self._stop_requested = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.kill)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != QProcess.ProcessState.NotRunning

    def stop_requested(self) -> bool:
        return self._stop_requested

    def start(self, arguments: list[str]) -> None:
        if self.is_running():
            raise TrainProcessError(
                "A training run is already going on; stop it or wait for it to finish."
            )
        self._out, self._err, self._err_chars = b"", [], 0
        self._registered, self._error = None, None
        self._cancelled_event = self._stop_requested = False
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        # Make `-m app.cli` importable from a source checkout, wherever the GUI was started.
        source_root = str(Path(app.__file__).resolve().parents[1])
        current = env.value("PYTHONPATH")
        env.insert("PYTHONPATH", source_root + (os.pathsep + current if current else ""))
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.setProgram(self.python)
        # A frozen build's executable is maskloop itself; otherwise run the CLI module.
        frozen = getattr(sys, "frozen", False) and self.python == sys.executable
        proc.setArguments([*arguments] if frozen else ["-m", "app.cli", *arguments])
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._process_error)
        self._proc = proc
        log.info("starting training: %s -m app.cli %s", self.python, " ".join(arguments))
        proc.start()

    def stop(self, grace_ms: int = STOP_GRACE_MS) -> None:
        """Ask the trainer to stop after this iteration (it keeps a checkpoint); kill it if it
        has not ended after ``grace_ms``."""
        if not self.is_running():
            return
        self._stop_requested = True
        pid = self._proc.processId()
        if sys.platform != "win32" and pid > 0:
            os.kill(pid, signal.SIGINT)
        else:
            self._proc.terminate()
        self._kill_timer.start(grace_ms)

    def kill(self) -> None:
        """End the process now (no checkpoint of the current run is written)."""
        if self.is_running():
            self._stop_requested = True
            self._proc.kill()

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop and wait (application exit): nothing is left running behind the GUI."""
        if not self.is_running():
            return
        self.stop()
        if not self._proc.waitForFinished(timeout_ms):
            self._proc.kill()
            self._proc.waitForFinished(5000)

    # -- reading --------------------------------------------------------------------------------

    def _read_stdout(self, final: bool = False) -> None:
        self._out += bytes(self._proc.readAllStandardOutput().data()) + (b"\n" if final else b"")
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self._handle_line(line.decode("utf-8", "replace").strip())

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or "event" not in data:
            self._add_stderr(line + "\n")  # not an event: show it with the other messages
            return
        kind = data["event"]
        if kind == "registered":
            self._registered = data
        elif kind == "error":
            self._error = str(data.get("message", ""))
        elif kind == "finished" and data.get("cancelled"):
            self._cancelled_event = True
        self.event.emit(data)

    def _read_stderr(self) -> None:
        self._add_stderr(bytes(self._proc.readAllStandardError().data()).decode("utf-8", "replace"))

    def _add_stderr(self, text: str) -> None:
        self._err.append(text)
        self._err_chars += len(text)
        while self._err_chars > STDERR_KEEP_CHARS and len(self._err) > 1:
            self._err_chars -= len(self._err.pop(0))
        self.stderr.emit(text)

    def stderr_text(self) -> str:
        return "".join(self._err)

    # -- ending ---------------------------------------------------------------------------------

    def _finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._read_stdout(final=True)  # a last line without its newline counts too
        self._read_stderr()
        crashed = status == QProcess.ExitStatus.CrashExit
        self.finished.emit(self._result(None if crashed else exit_code, crashed))

    def _result(self, exit_code: int | None, crashed: bool) -> TrainResult:
        tail = _tail(self.stderr_text())
        if self._registered is not None:
            version = int(self._registered["version"])
            return TrainResult(
                Outcome.REGISTERED,
                f"Registered model version v{version}.",
                version=version,
                metrics=dict(self._registered.get("metrics") or {}),
                exit_code=exit_code,
                stderr_tail=tail,
            )
        if self._stop_requested or self._cancelled_event or exit_code == 130:
            return TrainResult(
                Outcome.CANCELLED,
                "Training stopped; nothing was registered.",
                exit_code=exit_code,
                stderr_tail=tail,
            )
        message = self._error or (
            "The training process crashed."
            if crashed
            else f"The training process ended with exit code {exit_code}."
        )
        return TrainResult(Outcome.FAILED, message, exit_code=exit_code, stderr_tail=tail)

    def _process_error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart:
            return  # crashes are reported by finished
        self._kill_timer.stop()
        message = f"Could not start the training process {self.python}: {self._proc.errorString()}"
        self.finished.emit(TrainResult(Outcome.FAILED, message, stderr_tail=message))


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _metric_text(metrics: dict[str, float]) -> str:
    parts = [
        f"{label} {metrics[key]:.3f}"
        for key, label in (("segm_AP", "segm AP"), ("segm_AP50", "AP50"), ("bbox_AP", "box AP"))
        if key in metrics
    ]
    return ", ".join(parts)


class TrainDialog(QDialog):
    """Choose a base model and options, train in a subprocess, watch it, get a new version."""

    version_registered = Signal(int)
    run_finished = Signal(object)  # TrainResult

    def __init__(
        self, store: ProjectStore, parent: QWidget | None = None, *, python: str = sys.executable
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.setWindowTitle("Train a model")
        self.setWindowIcon(qta.icon("mdi.school"))
        self.process = TrainProcess(python, self)
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
        self.epochs.setValue(10)
        self.epochs.setToolTip("Passes over the training images")
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(2)
        self.batch.setToolTip("Images per step (per GPU); lower it if memory runs out")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto uses a CUDA GPU when there is one, else the CPU")
        self.max_iters = QSpinBox()
        self.max_iters.setRange(0, 1_000_000)
        self.max_iters.setSpecialValueText("all epochs")
        self.max_iters.setToolTip("Stop after this many steps (quick trials); 0 runs all epochs")
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional, e.g. 'after batch 3'")
        self.activate = QCheckBox("Make the new version the active model")
        self.activate.setChecked(True)
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
        buttons = QHBoxLayout()
        buttons.addWidget(self.details_button)
        buttons.addStretch(1)
        for b in (self.start_button, self.stop_button, self.close_button):
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
            if "segm_AP" in v.metrics:
                label += f" (segm AP {v.metrics['segm_AP']:.3f})"
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
        self._set_running(self.process.is_running())

    def options(self) -> TrainOptions:
        return TrainOptions(
            base_model=self.base.currentData(),
            epochs=self.epochs.value(),
            batch_size=self.batch.value(),
            device=self.device.currentText(),
            max_iters=self.max_iters.value() or None,
            name=self.name.text().strip(),
            activate=self.activate.isChecked(),
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
        self.loss_plot.clear()
        self.ap_plot.clear()
        self.details.clear()
        self.progress.setRange(0, 0)  # busy until the first iteration reports its total
        self.progress_label.setText("Loading the model and the images\u2026")
        self._show_status("")
        self._set_running(True)
        self.process.start(self.options().arguments(self.store.root))

    def stop(self) -> None:
        """First press: stop after this iteration, keeping a checkpoint. Second: kill now."""
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
        if self.process.is_running():
            self._show_status("Training is running: stop it before closing this window.")
        return self.process.is_running()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        event.ignore() if self._refuse_close() else super().closeEvent(event)

    def reject(self) -> None:
        if not self._refuse_close():
            super().reject()

    # -- events ---------------------------------------------------------------------------------

    def _on_event(self, data: dict) -> None:
        kind = data.get("event")
        if kind == "iteration":
            total, it = int(data["total_iterations"]), int(data["iteration"])
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(it)
            self.loss_plot.add_point("loss", it, float(data["loss"]))
            if not self.process.stop_requested():
                self.progress_label.setText(
                    f"Epoch {int(data['epoch']) + 1}, iteration {it} of {total}, "
                    f"loss {float(data['loss']):.3f}, {float(data['images_per_s']):.2f} images/s, "
                    f"about {format_duration(float(data['eta_s']))} left"
                )
        elif kind == "epoch":
            metrics = data.get("metrics") or {}
            x = int(data["epoch"]) + 1
            for key, series in (("segm_AP", "AP"), ("segm_AP50", "AP50")):
                if key in metrics:
                    self.ap_plot.add_point(series, x, float(metrics[key]))
            if metrics:
                self.progress_label.setText(f"Epoch {x} evaluated: {_metric_text(metrics)}")
        elif kind == "finished" and not data.get("cancelled"):
            self.progress_label.setText("Training done; registering the new version\u2026")

    def _on_stderr(self, text: str) -> None:
        self.details.moveCursor(QTextCursor.MoveOperation.End)
        self.details.insertPlainText(text)

    def _on_finished(self, result: TrainResult) -> None:
        if self.progress.maximum() == 0:  # ended before the first iteration
            self.progress.setRange(0, 1)
        if result.outcome is Outcome.REGISTERED:
            text = f"Registered model version v{result.version}"
            if self.activate.isChecked():
                text += ", now the active model"
            metrics = _metric_text(result.metrics)
            self._show_status(text + (f". Validation: {metrics}." if metrics else "."))
            self.progress_label.setText("Finished.")
            self.progress.setValue(self.progress.maximum())
        elif result.outcome is Outcome.CANCELLED:
            kept = checkpoint_path(self.store.root).exists()
            self._show_status(
                result.message
                + (" The checkpoint is kept: Train again to continue it." if kept else "")
            )
            self.progress_label.setText("Stopped.")
        else:
            tail = f"\n\n{result.stderr_tail}" if result.stderr_tail else ""
            self._show_status(f"Training failed: {result.message}{tail}", error=True)
            self.progress_label.setText("Failed.")
            self.details_button.setChecked(True)
        self.refresh()
        self.run_finished.emit(result)
        if result.outcome is Outcome.REGISTERED and result.version is not None:
            self.version_registered.emit(result.version)
