"""Progress of a long import or export, and how a person stops one.

An operation calls its ``progress(done, total)`` callback as it goes (``total`` 0 while
unknown); the callback raises :class:`OperationCancelled` to stop it. Imports read every
file before they write, in one store transaction, so a cancelled import leaves the project
as it was; exports remove the files they created (:class:`CreatedFiles`), so a cancelled
export leaves nothing behind but the files it replaced with ``overwrite``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.errors import MaskLoopError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total); total 0 when unknown


class OperationCancelled(MaskLoopError):
    """The person stopped the operation; what it had written is undone."""


def report(progress: Progress | None, done: int, total: int) -> None:
    """Tell ``progress`` (if any) how far the operation is."""
    if progress is not None:
        progress(done, total)


class CreatedFiles:
    """The files an export creates, removed again if it is cancelled or fails.

    A target that existed before (replaced with ``overwrite``) is not listed: removing it
    would lose the old file as well.
    """

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.folders: list[Path] = []

    def will_write(self, target: Path) -> None:
        """Call before writing ``target`` (and before making its folders)."""
        if target.exists():
            return
        self.paths.append(target)
        self.will_make(target.parent)

    def will_make(self, folder: Path) -> None:
        """Call before making ``folder`` (and its missing parents)."""
        while not folder.exists() and folder not in self.folders:
            self.folders.append(folder)
            folder = folder.parent

    def remove(self) -> None:
        for path in reversed(self.paths):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s after a cancelled export: %s", path, exc)
        for folder in sorted(self.folders, key=lambda f: len(f.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: something else was put there meanwhile
        self.paths, self.folders = [], []
