"""A terminal progress bar for the core imports and exports (their ``progress`` callback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.core.progress import Progress


@contextmanager
def progress_bar(desc: str, unit: str) -> Iterator[Progress]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, gone when done."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit=unit, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        yield progress
