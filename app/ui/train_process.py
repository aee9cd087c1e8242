"""The ``maskloop train --events-json`` subprocess behind the Train dialog.

Training runs in a QProcess, so the GUI stays responsive, a crash cannot take the
annotations with it, and the GUI shares the command line's checkpointing, resume and
all-or-nothing registration. Stop sends SIGINT: the trainer finishes the iteration, keeps a
checkpoint and registers nothing (a second Stop kills the process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from enum import StrEnum

from PySide6.QtCore import QObject, QProcess, QTimer, Signal

from app.errors import MaskLoopError
from app.ml.train_events import (
    EVENT_KEY,
    ErrorEvent,
    FinishedEvent,
    RegisteredEvent,
    TrainEventError,
    from_dict,
)

from .cli_process import cli_process

log = logging.getLogger(__name__)

STDERR_KEEP_CHARS = 200_000
STDERR_TAIL_LINES = 15
STOP_GRACE_MS = 120_000


class TrainProcessError(MaskLoopError):
    """The training subprocess cannot be started as asked."""


class Outcome(StrEnum):
    REGISTERED = "registered"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass
class TrainResult:
    """How a run ended, with what the user needs to understand it."""

    outcome: Outcome
    message: str
    version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    stderr_tail: str = ""


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class TrainProcess(QObject):
    """One ``maskloop train --events-json`` subprocess, its events parsed as they arrive."""

    event = Signal(object)  # one TrainEvent, as its line arrives
    stderr = Signal(str)  # text as it arrives
    finished = Signal(object)  # TrainResult

    def __init__(self, python: str = sys.executable, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.python = python
        self._proc: QProcess | None = None
        self._out, self._err, self._err_chars = b"", [], 0
        self._registered: RegisteredEvent | None = None
        self._error: str | None = None
        self._cancelled_event = self._stop_requested = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.kill)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != QProcess.ProcessState.NotRunning

    def stop_requested(self) -> bool:
        return self._stop_requested

    def start(self, arguments: list[str]) -> None:
        if self.is_running():
            raise TrainProcessError(
                "A training run is already going on; stop it or wait for it to finish."
            )
        self._out, self._err, self._err_chars = b"", [], 0
        self._registered, self._error = None, None
        self._cancelled_event = self._stop_requested = False
        proc = cli_process(self.python, arguments, self)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._process_error)
        self._proc = proc
        log.info("starting training: %s -m app.cli %s", self.python, " ".join(arguments))
        proc.start()

    def stop(self, grace_ms: int = STOP_GRACE_MS) -> None:
        """Ask the trainer to stop after this iteration (it keeps a checkpoint); kill it if it
        has not ended after ``grace_ms``."""
        if not self.is_running():
            return
        self._stop_requested = True
        pid = self._proc.processId()
        if sys.platform != "win32" and pid > 0:
            os.kill(pid, signal.SIGINT)
        else:
            self._proc.terminate()
        self._kill_timer.start(grace_ms)

    def kill(self) -> None:
        """End the process now (no checkpoint of the current run is written)."""
        if self.is_running():
            self._stop_requested = True
            self._proc.kill()

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop and wait (application exit): nothing is left running behind the GUI."""
        if not self.is_running():
            return
        self.stop()
        if not self._proc.waitForFinished(timeout_ms):
            self._proc.kill()
            self._proc.waitForFinished(5000)

    # -- reading --------------------------------------------------------------------------------

    def _read_stdout(self, final: bool = False) -> None:
        self._out += bytes(self._proc.readAllStandardOutput().data()) + (b"\n" if final else b"")
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self._handle_line(line.decode("utf-8", "replace").strip())

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or EVENT_KEY not in data:
            self._add_stderr(line + "\n")  # not an event: show it with the other messages
            return
        try:
            event = from_dict(data)
        except TrainEventError as exc:  # shown, and the failure's reason if nothing else is
            log.warning("%s: %s", exc, line)
            self._error = self._error or str(exc)
            self._add_stderr(f"{exc}\n{line}\n")
            return
        if event is None:  # a kind a newer trainer reports: nothing here needs it
            log.info("ignoring training event %r", data[EVENT_KEY])
            return
        if isinstance(event, RegisteredEvent):
            self._registered = event
        elif isinstance(event, ErrorEvent):
            self._error = event.message
        elif isinstance(event, FinishedEvent) and event.cancelled:
            self._cancelled_event = True
        self.event.emit(event)

    def _read_stderr(self) -> None:
        self._add_stderr(bytes(self._proc.readAllStandardError().data()).decode("utf-8", "replace"))

    def _add_stderr(self, text: str) -> None:
        self._err.append(text)
        self._err_chars += len(text)
        while self._err_chars > STDERR_KEEP_CHARS and len(self._err) > 1:
            self._err_chars -= len(self._err.pop(0))
        self.stderr.emit(text)

    def stderr_text(self) -> str:
        return "".join(self._err)

    # -- ending ---------------------------------------------------------------------------------

    def _finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._read_stdout(final=True)  # a last line without its newline counts too
        self._read_stderr()
        crashed = status == QProcess.ExitStatus.CrashExit
        self.finished.emit(self._result(None if crashed else exit_code, crashed))

    def _result(self, exit_code: int | None, crashed: bool) -> TrainResult:
        tail = _tail(self.stderr_text())
        if self._registered is not None:
            version = self._registered.version
            return TrainResult(
                Outcome.REGISTERED,
                f"Registered model version v{version}.",
                version=version,
                metrics=dict(self._registered.metrics),
                exit_code=exit_code,
                stderr_tail=tail,
            )
        if self._stop_requested or self._cancelled_event or exit_code == 130:
            return TrainResult(
                Outcome.CANCELLED,
                "Training stopped; nothing was registered.",
                exit_code=exit_code,
                stderr_tail=tail,
            )
        message = self._error or (
            "The training process crashed."
            if crashed
            else f"The training process ended with exit code {exit_code}."
        )
        return TrainResult(Outcome.FAILED, message, exit_code=exit_code, stderr_tail=tail)

    def _process_error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart:
            return  # crashes are reported by finished
        self._kill_timer.stop()
        message = f"Could not start the training process {self.python}: {self._proc.errorString()}"
        self.finished.emit(TrainResult(Outcome.FAILED, message, stderr_tail=message))
