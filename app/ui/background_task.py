"""Run a project operation (scan, import, export) off the GUI thread behind a progress dialog.

The operation gets its own :class:`ProjectStore` connection in the worker thread (SQLite
connections stay in the thread that made them; WAL lets the window's connection read on),
so a slow scan or a large import never freezes the window. The caller waits in a local event
loop: the window repaints, but stays modal, so nothing edits the project meanwhile.

The dialog counts what is done ("120 of 500"). Where stopping is safe (imports write in one
transaction at the end, exports remove what they created) it has a Cancel button: the
operation's next progress call raises :class:`app.core.progress.OperationCancelled`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, Qt, QThread, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from app.core.progress import OperationCancelled, Progress
from app.core.store import ProjectStore

log = logging.getLogger(__name__)

Operation = Callable[[ProjectStore, Progress], Any]
SHOW_AFTER_MS = 300


class _Worker(QThread):
    progressed = Signal(int, int)

    def __init__(self, project: Path, operation: Operation, create: bool) -> None:
        super().__init__()
        self.project, self.operation, self.create = project, operation, create
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancel = threading.Event()  # set from the GUI thread

    def _progress(self, done: int, total: int) -> None:
        if self.cancel.is_set():
            raise OperationCancelled("cancelled")
        self.progressed.emit(done, total)

    def run(self) -> None:
        try:
            with ProjectStore.open(self.project, create=self.create) as store:
                self.result = self.operation(store, self._progress)
        except Exception as exc:  # handed to the GUI thread, which reports it
            self.error = exc


def run_in_background(
    parent: QWidget | None,
    project: Path,
    text: str,
    operation: Operation,
    *,
    create: bool = False,
    cancellable: bool = False,
) -> Any:
    """Run ``operation(store, progress)`` on ``project`` in a worker thread, showing ``text``
    and the progress; return its result or raise its exception here (a cancelled one as
    :class:`OperationCancelled`). ``cancellable`` adds a Cancel button: only for operations
    that undo what they did when stopped, or that leave what running them again completes
    (a folder scan keeps the images it added)."""
    dialog = QProgressDialog(text, "Cancel" if cancellable else "", 0, 0, parent)
    dialog.setWindowTitle("MaskLoop")
    dialog.setWindowModality(Qt.WindowModality.WindowModal)
    if not cancellable:
        dialog.setCancelButton(None)  # only operations that undo what they did may stop
    dialog.setMinimumDuration(SHOW_AFTER_MS)
    dialog.setAutoClose(False)
    dialog.setAutoReset(False)
    worker = _Worker(project, operation, create)
    dialog.canceled.connect(worker.cancel.set)
    dialog.canceled.connect(lambda: dialog.setLabelText(f"{text}\nCancelling\u2026"))

    def show(done: int, total: int) -> None:
        if worker.cancel.is_set():
            return
        dialog.setMaximum(max(total, 0))
        dialog.setValue(min(done, total) if total else 0)
        dialog.setLabelText(f"{text}\n{done} of {total}" if total else text)

    worker.progressed.connect(show)
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    log.info("%s (%s)", text, project)
    worker.start()
    loop.exec()
    worker.wait()
    dialog.close()
    dialog.deleteLater()
    if worker.error is not None:
        raise worker.error
    return worker.result
