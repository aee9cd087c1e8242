"""Collect every bad line or entry of a foreign dataset, then refuse the import once, listing them.

A user fixes a file faster from one message naming each bad place (``file:line: why``) than
from one error at a time; the project is written only when nothing was collected.
"""

from __future__ import annotations

from app.errors import MaskLoopError

MAX_SHOWN = 20


class DatasetFormatError(MaskLoopError):
    """A dataset with malformed files; nothing was imported."""


class Problems:
    """``where: what`` items collected while parsing one dataset."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def raise_if_any(self) -> None:
        """Raise :meth:`error` listing the first problems, if there are any."""
        if not self.items:
            return
        shown = "\n  ".join(self.items[:MAX_SHOWN])
        more = len(self.items) - MAX_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise self.error(f"{shown}{tail}")

    def error(self, listing: str) -> MaskLoopError:
        """The error naming the problems (``listing``: one indented line each)."""
        return DatasetFormatError(
            f"{self.source} has {len(self.items)} malformed entries; nothing was imported. "
            f"Fix or remove them and import again:\n  {listing}"
        )
