"""Where exports may write: the one owner of overwrite guards.

An export must never destroy what the user made: the project store and the project's
images are never written over, whatever the flags; any other existing file is replaced
only when the caller says so (``--overwrite``). How files are written (a temporary name,
fsync, rename; cleanup of what a killed run left) is :mod:`app.core.atomic`'s.
"""

from __future__ import annotations

from pathlib import Path

from app.core.store import DB_NAME, ProjectStore
from app.errors import MaskLoopError

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
