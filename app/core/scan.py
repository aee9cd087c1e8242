"""Scan an image folder into a project: the work behind ``maskloop init`` and File > Open folder.

Only headers are read (sizes), so a folder of 20,000 images is scanned in seconds. A scan can
be repeated at any time: it adds new files, never duplicates, flags images whose files are
gone and un-flags the ones that came back. Unreadable files are reported, not fatal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from app.core.images import SUPPORTED_EXTENSIONS, ImageReadError, pixel_limit, read_image_size
from app.core.store import DB_NAME, MODELS_DIR, NewImage, ProjectStore
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

BATCH_SIZE = 2000  # images per store transaction: an interrupted scan keeps what it committed
PROGRESS_EVERY = 256


class ScanError(MaskLoopError):
    """The image folder itself cannot be scanned."""


@dataclass
class ScanReport:
    """What a scan changed. ``existing`` excludes ``reappeared``; ``missing`` counts every
    image of the project whose file is gone now, flagged before or by this scan."""

    added: int = 0
    existing: int = 0
    missing: int = 0
    reappeared: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def scan_folder(
    store: ProjectStore,
    images_dir: Path | str,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Add the images under ``images_dir`` (recursively) to ``store`` and report what changed.

    Hidden files and folders, the project's ``models/`` folder and nested MaskLoop projects
    are skipped; symlinked folders are not followed; broken or looping links to image
    files are reported as unreadable. Stored paths are relative to the
    project folder (POSIX, with ``..`` when the images live beside it). ``progress`` gets
    (files done, files found).
    """
    root = Path(images_dir).expanduser()
    if not root.is_dir():
        raise ScanError(f"image folder {root} does not exist or is not a folder")
    root = root.resolve()
    limit = pixel_limit()
    report = ScanReport()
    files = sorted(_walk(root, store.root, report), key=lambda p: p[0])
    known = {rec.path: rec for rec in store.images(include_missing=True)}
    seen: set[str] = set()
    batch: list[NewImage] = []
    came_back: list[int] = []
    total = len(files)
    for done, (rel, path) in enumerate(files, 1):
        seen.add(rel)
        record = known.get(rel)
        if record is not None:
            if record.missing:
                came_back.append(record.id)
            else:
                report.existing += 1
        else:
            new = _new_image(path, rel, limit, report)
            if new is not None:
                batch.append(new)
                if len(batch) >= BATCH_SIZE:
                    report.added += len(store.add_images(batch))
                    batch.clear()
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            progress(done, total)
    if batch:
        report.added += len(store.add_images(batch))
    # Images of the project this walk did not meet may live elsewhere (another scanned
    # folder, an import): only a file that is really gone makes an image missing.
    gone: list[int] = []
    for rel, record in known.items():
        if rel in seen:
            continue
        if store.abspath(record).is_file():
            if record.missing:
                came_back.append(record.id)
        else:
            report.missing += 1
            if not record.missing:
                gone.append(record.id)
    if came_back:
        store.set_missing(came_back, False)
    if gone:
        store.set_missing(gone, True)
    report.reappeared = len(came_back)
    log.info(
        "scanned %s: %d added, %d already there, %d came back, %d missing, %d unreadable",
        root,
        report.added,
        report.existing,
        report.reappeared,
        report.missing,
        len(report.unreadable),
    )
    return report


def _new_image(path: str, rel: str, limit: int, report: ScanReport) -> NewImage | None:
    try:
        width, height = read_image_size(path, max_pixels=limit)
        st = os.stat(path)
    except ImageReadError as exc:
        report.unreadable.append((rel, exc.reason))
        return None
    except OSError as exc:
        report.unreadable.append((rel, exc.strerror or str(exc)))
        return None
    return NewImage(rel, width, height, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)


def _walk(root: Path, project: Path, report: ScanReport) -> Iterator[tuple[str, str]]:
    """(path relative to ``project`` in POSIX form, absolute path) of each candidate file."""
    skip_dirs = {os.fspath(project / MODELS_DIR)}
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            report.unreadable.append(
                (_relative(folder, project), f"cannot list folder: {exc.strerror or exc}")
            )
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.path in skip_dirs or os.path.exists(os.path.join(entry.path, DB_NAME)):
                    continue
                stack.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in SUPPORTED_EXTENSIONS:
                try:
                    is_file = entry.is_file()
                except OSError as exc:  # a link to itself or in a circle (ELOOP)
                    report.unreadable.append(
                        (_relative(entry.path, project), f"broken link: {exc.strerror or exc}")
                    )
                    continue
                if is_file:
                    yield _relative(entry.path, project), entry.path
                elif entry.is_symlink():
                    report.unreadable.append(
                        (_relative(entry.path, project), "broken link: its target does not exist")
                    )


def _relative(path: str, project: Path) -> str:
    try:
        rel = os.path.relpath(path, project)
    except ValueError:  # another drive on Windows: no relative path exists
        rel = path
    return PurePath(rel).as_posix()
