"""Display dock for microscopy images: auto contrast or manual min/max, gamma, channels."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QWidget,
)

from app.ui.display import DisplaySettings, channel_count, effective_range


def _spin(lo: float, hi: float, decimals: int, tip: str) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setKeyboardTracking(False)
    s.setToolTip(tip)
    return s


class DisplayPanel(QWidget):
    settings_changed = Signal(object)  # DisplaySettings

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = DisplaySettings()
        self.auto = QCheckBox("Auto contrast (percentiles)")
        self.auto.setChecked(True)
        self.auto.setToolTip("Stretch between low and high percentiles of the image")
        self.low_pct = _spin(0, 50, 2, "Low percentile mapped to black")
        self.high_pct = _spin(50, 100, 2, "High percentile mapped to white")
        self.low = _spin(-1e12, 1e12, 3, "Value shown as black (manual contrast)")
        self.high = _spin(-1e12, 1e12, 3, "Value shown as white (manual contrast)")
        self.gamma = _spin(0.1, 5.0, 2, "Gamma: below 1 brightens dark regions")
        self.gamma.setSingleStep(0.1)
        self.channels = QComboBox()
        self.channels.setToolTip("Channels of a multi-channel image to show")
        form = QFormLayout(self)
        form.addRow(self.auto)
        form.addRow("Low %", self.low_pct)
        form.addRow("High %", self.high_pct)
        form.addRow("Min", self.low)
        form.addRow("Max", self.high)
        form.addRow("Gamma", self.gamma)
        form.addRow("Channels", self.channels)
        self._set_widgets(self.settings)
        for w in (self.low_pct, self.high_pct, self.low, self.high, self.gamma):
            w.valueChanged.connect(self._changed)
        self.auto.toggled.connect(self._changed)
        self.channels.currentIndexChanged.connect(self._changed)

    def _set_widgets(self, s: DisplaySettings) -> None:
        widgets = (self.auto, self.low_pct, self.high_pct, self.low, self.high, self.gamma)
        for w in widgets:
            w.blockSignals(True)
        self.auto.setChecked(s.auto)
        self.low_pct.setValue(s.low_pct)
        self.high_pct.setValue(s.high_pct)
        self.low.setValue(s.low)
        self.high.setValue(s.high)
        self.gamma.setValue(s.gamma)
        for w in (self.low_pct, self.high_pct):
            w.setEnabled(s.auto)
        for w in (self.low, self.high):
            w.setEnabled(not s.auto)
        for w in widgets:
            w.blockSignals(False)

    def set_settings(self, settings: DisplaySettings) -> None:
        """Show and apply saved settings (e.g. the project's, when it is reopened)."""
        self.settings = settings
        self._set_widgets(settings)
        self.settings_changed.emit(settings)

    def set_image(self, image: np.ndarray | None) -> None:
        """Offer this image's channels and show the range auto contrast picked."""
        self.channels.blockSignals(True)
        self.channels.clear()
        n = 0 if image is None else channel_count(image)
        self.channels.addItem("Default (first three)", None)
        if n > 1:
            for c in range(n):
                self.channels.addItem(f"Channel {c}", (c,))
            if n > 3:
                self.channels.addItem("Channels 0, 1, 2 as RGB", (0, 1, 2))
        self.channels.blockSignals(False)
        self.settings = self.settings.with_(channels=None)
        if image is not None and self.settings.auto:
            low, high = effective_range(image, self.settings)
            self.settings = self.settings.with_(low=low, high=high)
            self._set_widgets(self.settings)

    def _keep_min_below_max(self) -> None:
        """Manual contrast needs min < max (else the image turns black): the field just
        edited is moved back to one step inside the other."""
        low, high = self.low.value(), self.high.value()
        if low < high:
            return
        edited = self.high if self.sender() is self.high else self.low
        edited.blockSignals(True)
        if edited is self.high:
            self.high.setValue(low + self.high.singleStep())
        else:
            self.low.setValue(high - self.low.singleStep())
        edited.blockSignals(False)

    def _changed(self) -> None:
        self._keep_min_below_max()
        self.settings = DisplaySettings(
            auto=self.auto.isChecked(),
            low_pct=self.low_pct.value(),
            high_pct=self.high_pct.value(),
            low=self.low.value(),
            high=self.high.value(),
            gamma=self.gamma.value(),
            channels=self.channels.currentData(),
        )
        self._set_widgets(self.settings)
        self.settings_changed.emit(self.settings)
