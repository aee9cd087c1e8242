"""Keep the images' uncertainty in step with the score threshold, off the GUI thread.

An image's uncertainty counts the corrections its review is expected to need when the
proposals at or above the threshold are shown (:func:`app.ml.active.image_uncertainty`), so
a new threshold changes it. The stored proposals hold every detection down to the floor,
so it is computed again from them, without a model, on a thread with its own store
connection (a few milliseconds per image); a newer threshold stops the run and starts
another.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from app.core.store import ProjectStore
from app.ml.active import rescore_uncertainty

log = logging.getLogger(__name__)


class _Run(QThread):
    def __init__(self, root: Path, threshold: float) -> None:
        super().__init__()
        self.root, self.threshold = root, threshold
        self.stop = threading.Event()
        self.rescored = 0

    def run(self) -> None:
        try:
            with ProjectStore.open(self.root) as store:
                self.rescored = rescore_uncertainty(store, self.threshold, self.stop.is_set)
        except Exception:  # a busy or read-only project: the old figures stay
            log.warning(
                "uncertainty not recomputed for threshold %.2f", self.threshold, exc_info=True
            )


class UncertaintyRescorer(QObject):
    """Recompute the project's uncertainties for the latest threshold asked for."""

    rescored = Signal(int)  # images rescored (the image list should refresh)

    def __init__(self, root: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.root = root
        self._run: _Run | None = None
        self._next: float | None = None

    def request(self, threshold: float) -> None:
        if self._run is not None and self._run.isRunning():
            self._next = threshold
            self._run.stop.set()
            return
        self._start(threshold)

    def finish(self) -> None:
        """Wait until the latest threshold asked for is applied (the window is closing)."""
        while self._run is not None:
            run, self._run = self._run, None  # its finished signal is ignored from now on
            run.wait()
            if self._next is not None:
                threshold, self._next = self._next, None
                self._start(threshold)

    def _start(self, threshold: float) -> None:
        run = _Run(self.root, threshold)
        run.finished.connect(lambda: self._finished(run))
        self._run = run
        run.start()

    def _finished(self, run: _Run) -> None:
        if run is not self._run:
            return
        if self._next is not None:
            threshold, self._next = self._next, None
            self._start(threshold)
            return
        self.rescored.emit(run.rescored)
