"""Find project images by a file name from a foreign dataset (``sub/cell_01`` -> ``img/sub/cell_01.tif``).

YOLO label files and ImageJ ROI sets name their image only by a path without extension
below their own folder. They are matched to the project's images by the trailing folders
and stem of each image's path, so an exported dataset comes back onto the images it was
made from, wherever those live.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from app.core.types import ImageRecord


def _stem_parts(path: str) -> tuple[str, ...]:
    pure = PurePosixPath(path)
    return (*pure.parent.parts, pure.stem)


class ImagesByName:
    """Project images indexed by every trailing part of their path without extension."""

    def __init__(self, records: Iterable[ImageRecord]) -> None:
        self._index: dict[tuple[str, ...], list[ImageRecord]] = {}
        for record in records:
            parts = _stem_parts(record.path)
            for k in range(len(parts)):
                self._index.setdefault(parts[k:], []).append(record)

    def find(self, name: str) -> list[ImageRecord]:
        """The images whose path ends in ``name`` (POSIX, no extension); several = ambiguous."""
        return list(self._index.get(tuple(PurePosixPath(name).parts), []))
