"""The model dock: which model proposes, on which device, and how it is doing.

What the model proposes is stored down to the score floor; which proposals are shown is the
toolbar's score threshold, not a setting of the model."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ml.devices import DEVICE_CHOICES as DEVICES
from app.ui.durations import format_duration
from app.ui.workers import ModelChoice, WorkerStatus


@dataclass(frozen=True)
class ModelEntry:
    """One choice in the model list: its id and how it is shown."""

    model_id: str
    label: str
    usable: bool = True  # False: weights must be downloaded first and we are offline


def _format_eta(seconds: float) -> str:
    if seconds < 0:
        return "estimating…"
    return f"about {format_duration(seconds)} left"


class ModelPanel(QWidget):
    choice_changed = Signal(object)  # ModelChoice
    propose_all_requested = Signal()
    cancel_requested = Signal()

    def __init__(
        self,
        entries: list[ModelEntry],
        choice: ModelChoice,
        *,
        cuda_available: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = QComboBox()
        # Model names are long: they elide rather than widen the dock over the image.
        self.model.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model.setMinimumContentsLength(16)
        self.model.setToolTip(
            "The model that proposes instances (zoo models and this project's versions)"
        )
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto: the GPU when there is one, else the CPU")
        if not cuda_available:
            self.device.model().item(DEVICES.index("cuda")).setEnabled(False)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.propose_all = QPushButton("Propose all")
        self.propose_all.setToolTip(
            "Propose every image nobody has worked on, in the background (the app stays usable)"
        )
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.eta = QLabel()

        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.propose_all)
        buttons.addWidget(self.cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.info)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.eta)
        layout.addStretch(1)

        self.set_entries(entries, choice)
        self.device.setCurrentText(choice.device if choice.device in DEVICES else "auto")
        self.model.activated.connect(self._changed)
        self.device.activated.connect(self._changed)
        self.propose_all.clicked.connect(self.propose_all_requested)
        self.cancel.clicked.connect(self.cancel_requested)

    def set_entries(self, entries: list[ModelEntry], choice: ModelChoice) -> None:
        self.model.blockSignals(True)
        self.model.clear()
        for entry in entries:
            self.model.addItem(entry.label, entry.model_id)
            if not entry.usable:
                self.model.model().item(self.model.count() - 1).setEnabled(False)
        index = self.model.findData(choice.model_id)
        self.model.setCurrentIndex(max(index, 0))
        self.model.blockSignals(False)

    def choice(self) -> ModelChoice:
        return ModelChoice(str(self.model.currentData()), self.device.currentText())

    def _changed(self, *_: object) -> None:
        self.choice_changed.emit(self.choice())

    # -- worker feedback ------------------------------------------------------------------------

    def show_status(self, status: WorkerStatus) -> None:
        parts = [f"<b>{status.model_id}</b>"]
        if status.device_name:
            parts.append(f"on {status.device_name}")
        line = f"{status.state}, {status.queue_length} queued"
        if status.last_seconds is not None:
            line += f", last image {status.last_seconds:.2f} s"
        self.info.setText(" ".join(parts) + "<br>" + line)

    def show_progress(self, done: int, total: int, eta: float) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{done} / {total} images")
        self.eta.setText(_format_eta(eta))
        self.cancel.setEnabled(True)
        self.propose_all.setEnabled(False)

    def batch_finished(self, cancelled: bool) -> None:
        self.cancel.setEnabled(False)
        self.propose_all.setEnabled(True)
        self.progress.setVisible(False)
        self.eta.setText("Cancelled." if cancelled else "All images proposed.")
