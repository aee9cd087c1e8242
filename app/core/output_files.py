"""Where exports may write, and how: the one owner of overwrite guards and atomic writes.

An export must never destroy what the user made: the project store and the project's
images are never written over, whatever the flags; any other existing file is replaced
only when the caller says so (``--overwrite``). Files are written to a temporary name
beside the target and renamed over it, so a target is never half-written; temporary files
a killed run left behind are removed by the next export to the same targets.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path

from app.core.store import DB_NAME, ProjectStore
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

_STORE_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal")


class OutputRefusedError(MaskLoopError):
    """An output path that would destroy the user's data, or replace a file unasked."""


def _store_files(store: ProjectStore) -> set[Path]:
    return {(store.root / name).resolve() for name in _STORE_FILES}


def project_image_paths(store: ProjectStore) -> set[Path]:
    """The resolved files of every project image, missing ones included."""
    return {store.abspath(image) for image in store.images(include_missing=True)}


def check_output(
    store: ProjectStore,
    target: Path,
    *,
    overwrite: bool,
    image_paths: set[Path] | None = None,
) -> None:
    """Raise :class:`OutputRefusedError` unless writing ``target`` is safe.

    ``image_paths`` (from :func:`project_image_paths`) saves recomputing it per file.
    """
    resolved = Path(target).expanduser().resolve()
    if resolved in _store_files(store):
        raise OutputRefusedError(
            f"{target} is the project's database; writing there would destroy the project. "
            "Choose another output file, e.g. a name ending in .json"
        )
    images = project_image_paths(store) if image_paths is None else image_paths
    if resolved in images:
        raise OutputRefusedError(
            f"{target} is one of the project's images; an export never replaces them. "
            "Choose an output outside the images' folders"
        )
    if resolved.is_dir():
        raise OutputRefusedError(f"{target} is a folder; give a file name to write")
    if resolved.exists() and not overwrite:
        raise OutputRefusedError(
            f"{target} already exists; pass --overwrite to replace it, or choose another name"
        )


def check_output_folder(store: ProjectStore, folder: Path, image_folders: set[Path]) -> None:
    """Refuse writing per-image files into a folder that holds project images.

    Files written there would replace images or be scanned as new images by the next
    ``maskloop init``. ``image_folders``: the resolved folders of the project's images.
    """
    resolved = Path(folder).expanduser().resolve()
    if resolved in image_folders:
        safe = resolved.parent / f"{resolved.name}_labels"
        raise OutputRefusedError(
            f"{folder} holds the project's images; label maps written there could replace "
            f"them and would be scanned as images. Write them to a folder of their own, "
            f"e.g. {safe}"
        )
    if resolved == store.root.resolve():
        raise OutputRefusedError(
            f"{folder} is the project folder; write to a folder of its own, "
            f"e.g. {resolved / 'labels'}"
        )


def _temp_name(target: Path, pid: int) -> Path:
    return target.with_name(f".{target.name}.{pid}.tmp")


WINDOWS_STALE_AFTER_S = 24 * 3600  # no cheap pid check there: an old temp file is stale
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _writer_alive(pid: int, path: Path) -> bool:
    """Whether the process that named a temporary file ``pid`` may still be writing it."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            return time.time() - path.stat().st_mtime < WINDOWS_STALE_AFTER_S
        except OSError:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's live process, or no way to tell: leave its file alone
    return True


def remove_stale_temps(folder: Path, names: Collection[str]) -> int:
    """Delete the temporary files of ``folder``/``names`` whose writing process is gone.

    One listing of ``folder`` for all its targets; returns how many files were removed.
    """
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for path in entries:
        match = _TEMP.match(path.name)
        if match is None or match["name"] not in names or _writer_alive(int(match["pid"]), path):
            continue
        try:
            path.unlink()
            removed += 1
            log.info("removed %s, left by an interrupted write", path)
        except OSError:
            continue
    return removed


def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(temp_path)``, fsync the result and rename it over ``target``.

    On any failure (a full disk, Ctrl-C) the temporary file is removed, ``target`` is left
    as it was and the exception propagates.
    """
    target = Path(target)
    tmp = _temp_name(target, os.getpid())
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
