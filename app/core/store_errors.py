"""The project store's errors, and the one translation of SQLite failures into them.

Every message is one line that says what happened and what to do: a project locked by
another process, a full disk (nothing half-written: the transaction was rolled back), a
read-only file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.errors import MaskLoopError


class StoreError(MaskLoopError):
    """A project store could not be opened or written."""


class ProjectNotFoundError(StoreError):
    """The folder holds no MaskLoop project."""


class SchemaTooNewError(StoreError):
    """The project was written by a newer MaskLoop."""


class NotFoundError(StoreError):
    """An id that is not (or no longer) in the project."""


class CategoryInUseError(StoreError):
    """A category with instances cannot be deleted without saying what happens to them."""


class StoreLockedError(StoreError):
    """Another process held the project's write lock for longer than the lock timeout."""


class StoreFullError(StoreError):
    """The disk (or the database's size limit) is full; the change was rolled back."""


def store_error(exc: sqlite3.Error, db: Path | None) -> StoreError:
    """The :class:`StoreError` a user can act on for an SQLite failure (one line)."""
    where = f"the project database {db}" if db is not None else "the project database"
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreLockedError(
            f"{where} is busy: another MaskLoop process (propose, train, an import or the "
            "GUI) kept writing it for too long. Nothing was changed; run this again when it "
            "has finished, or stop it"
        )
    if "full" in text:
        return StoreFullError(
            f"the disk holding {where} is full: this change was not saved and the project "
            "is as it was before it. Free some disk space and run this again"
        )
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{where} is read-only; make it writable (or copy the project)")
    return StoreError(f"cannot use {where}: {exc}")
