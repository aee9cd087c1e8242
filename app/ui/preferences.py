"""Where the app keeps its preferences (QSettings: window layout, recent projects, ...)."""

from __future__ import annotations

from PySide6.QtCore import QSettings

ORG, APP = "MaskLoop", "MaskLoop"


def settings() -> QSettings:
    return QSettings(ORG, APP)
