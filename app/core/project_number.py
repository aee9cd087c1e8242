"""A number saved in the project's meta table (e.g. the score threshold, the simplify
tolerance): one place that validates it on write and reads it back forgivingly.

A hand-edited or damaged value must not stop a project from opening, so reading an
unreadable one logs a warning and gives the default; writing checks with the setting's own
rule, which raises an error the person can act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.core.store import ProjectStore
from app.errors import MaskLoopError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectNumber:
    """``key`` in the project's meta, ``default`` until saved, stored with ``digits``
    decimals; ``check`` rounds a value and raises a :class:`MaskLoopError` for a bad one."""

    key: str
    default: float
    digits: int
    check: Callable[[float], float]
    label: str  # what it is, for the log ("score threshold")

    def read(self, store: ProjectStore) -> float:
        saved = store.get_meta(self.key)
        if saved is None:
            return self.default
        try:
            return self.check(float(saved))
        except (ValueError, MaskLoopError):
            log.warning("ignoring the project's unreadable %s %r", self.label, saved)
            return self.default

    def write(self, store: ProjectStore, value: float) -> float:
        """Save ``value``; returns it as saved (checked and rounded)."""
        value = self.check(value)
        store.set_meta(self.key, f"{value:.{self.digits}f}")
        return value
