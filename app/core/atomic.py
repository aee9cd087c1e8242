"""Atomic file writes: the one owner of temporary names, fsync, rename and cleanup.

Every file MaskLoop writes for the user (exports, label maps, model cards, version
weights, training checkpoints, run records) goes through :func:`write_atomic`, so a target
holds either its old content or the whole new one, never a part:

- the data goes to a temporary file beside the target, named ``.<target>.<pid>-<random>.tmp``:
  unique per call, so two processes (or threads) writing the same target never share one;
- the temporary file is fsynced, renamed over the target (``os.replace``) and the folder
  fsynced, so the rename survives a power cut;
- on any failure (a full disk, Ctrl-C) the temporary file is removed and the error
  propagates; only a kill (SIGKILL, power loss) leaves one behind, and
  :func:`remove_stale_temps` removes those whose writing process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WINDOWS_STALE_AFTER_S = 24 * 3600  # no cheap pid check there: an old temp file is stale
# ".<name>.<pid>-<hex>.tmp"; ".<name>.<pid>.tmp" is what versions before the random part wrote.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:-[0-9a-f]+)?\.tmp$")


def temp_path(target: Path) -> Path:
    """A fresh temporary name beside ``target`` that no other writer uses."""
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is done
    finally:
        os.close(fd)


def write_atomic(target: Path | str, write: Callable[[Path], None]) -> None:
    """Run ``write(temp_path)``, fsync the result and rename it over ``target``.

    ``write`` gets a path nobody else uses (pass it to ``torch.save``, ``shutil.copyfile``,
    ...). On any failure the temporary file is removed, ``target`` is left as it was and the
    exception propagates.
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (see :func:`write_atomic`)."""
    write_atomic(target, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(target: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically (see :func:`write_atomic`)."""
    write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(target: Path | str, data: Any, **dumps: Any) -> None:
    """Write ``data`` as JSON (``json.dumps`` options in ``dumps``) to ``target`` atomically."""
    # dumps, not dump: only dumps uses the C encoder for the whole document.
    write_text_atomic(target, json.dumps(data, **dumps))


def _writer_alive(pid: int, path: Path) -> bool:
    """Whether the process that named a temporary file ``pid`` may still be writing it."""
    if pid == os.getpid():
        return True  # another thread of this process may be writing it now
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


def remove_stale_temps(folder: Path | str, names: Collection[str]) -> int:
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
