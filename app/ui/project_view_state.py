"""What a project looked like when it was closed: the image shown and the display mapping,
kept per project (QSettings, keyed by the project folder) so reopening a project carries on
where the person left it. The score threshold is saved in the project itself
(:mod:`app.core.score_threshold`); the slider value earlier versions kept here is read once,
to migrate it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

from PySide6.QtCore import QSettings

from .display import DisplaySettings


@dataclass
class ProjectViewState:
    image_id: int | None = None
    threshold: int | None = None  # percent: the slider of earlier versions (read only)
    display: DisplaySettings = field(default_factory=DisplaySettings)


def _group(root: Path) -> str:
    return "projects/" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]


def _float(value: object, default: float) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def load_view_state(settings: QSettings, root: Path) -> ProjectViewState:
    """The saved state of ``root``."""
    settings.beginGroup(_group(root))
    try:
        image = settings.value("image_id")
        default = DisplaySettings()
        numbers = {
            f.name: _float(settings.value(f"display/{f.name}"), getattr(default, f.name))
            for f in fields(DisplaySettings)
            if f.name in ("low_pct", "high_pct", "low", "high", "gamma")
        }
        auto = settings.value("display/auto")
        display = DisplaySettings(
            auto=default.auto if auto is None else str(auto).lower() in ("true", "1"), **numbers
        )
        threshold = settings.value("threshold")
        return ProjectViewState(
            image_id=None if image in (None, "") else int(_float(image, 0)) or None,
            threshold=None if threshold in (None, "") else int(_float(threshold, 50)),
            display=display,
        )
    finally:
        settings.endGroup()


def save_view_state(settings: QSettings, root: Path, state: ProjectViewState) -> None:
    settings.beginGroup(_group(root))
    try:
        settings.setValue("image_id", state.image_id if state.image_id is not None else "")
        settings.remove("threshold")  # now saved in the project
        d = state.display
        settings.setValue("display/auto", d.auto)
        for name in ("low_pct", "high_pct", "low", "high", "gamma"):
            settings.setValue(f"display/{name}", getattr(d, name))
    finally:
        settings.endGroup()
