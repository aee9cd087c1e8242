"""Measure a newly trained version against the active model on the same validation images.

A version replaces the active model only when it scores at least as well on the images
both are measured on (the project's stored validation split), so a short run or a run
whose heads started from scratch cannot silently make proposals worse. Both figures come
from ``maskloop evaluate --split val --json``, one subprocess per model, run one after the
other: the same Predictor path, thresholds and images for both.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Signal

from app.ml.metric_keys import AP

from .cli_process import cli_process

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelScore:
    """One model's mask AP on the validation images."""

    model_id: str
    segm_ap: float
    images: int


@dataclass(frozen=True)
class Comparison:
    """The candidate and the active model measured alike; ``error`` says why not, if not."""

    candidate: str
    active: str
    candidate_score: ModelScore | None = None
    active_score: ModelScore | None = None
    error: str = ""

    @property
    def measured(self) -> bool:
        return self.candidate_score is not None and self.active_score is not None

    @property
    def candidate_at_least_as_good(self) -> bool:
        """True only when both were measured and the candidate's mask AP is not lower."""
        if self.candidate_score is None or self.active_score is None:
            return False
        return self.candidate_score.segm_ap >= self.active_score.segm_ap

    def summary(self) -> str:
        """Both figures, for the dialog."""
        if not self.measured:
            return f"Could not compare {self.candidate} with {self.active}: {self.error}"
        assert self.candidate_score is not None and self.active_score is not None
        n = self.active_score.images
        return (
            f"On the same {n} validation image{'s' if n != 1 else ''}: "
            f"{self.candidate} segm AP {self.candidate_score.segm_ap:.3f}, "
            f"{self.active} (active) segm AP {self.active_score.segm_ap:.3f}."
        )


def parse_evaluation(model_id: str, stdout: str) -> ModelScore:
    """The score in ``maskloop evaluate --json`` output; ValueError if it has none."""
    data = json.loads(stdout)
    return ModelScore(model_id, float(data["segm"][AP]), int(data["images"]))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ComparisonProcess(QObject):
    """Evaluate the active model, then the candidate, in subprocesses; emit a Comparison."""

    finished = Signal(object)  # Comparison

    def __init__(self, python: str = sys.executable, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.python = python
        self._proc: QProcess | None = None
        self._queue: list[str] = []
        self._scores: dict[str, ModelScore] = {}
        self._comparison: Comparison | None = None
        self._project = Path()
        self._device = "auto"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != QProcess.ProcessState.NotRunning

    def start(self, project: Path, candidate: str, active: str, device: str = "auto") -> None:
        self._project, self._device = project, device
        self._comparison = Comparison(candidate=candidate, active=active)
        self._queue = [active, candidate]
        self._scores = {}
        self._next()

    def kill(self) -> None:
        """Stop measuring: the comparison ends unmeasured (nothing is activated)."""
        if self.is_running():
            self._queue = []
            assert self._proc is not None
            self._proc.kill()

    def _next(self) -> None:
        assert self._comparison is not None
        if not self._queue:
            self._finish("")
            return
        model_id = self._queue.pop(0)
        args = ["evaluate", str(self._project), "--model", model_id, "--split", "val"]
        args += ["--device", self._device, "--json"]
        proc = cli_process(self.python, args, self)
        proc.finished.connect(lambda code, status, m=model_id: self._evaluated(m, code, status))
        proc.errorOccurred.connect(self._process_error)
        self._proc = proc
        log.info("measuring %s on the validation images", model_id)
        proc.start()

    def _evaluated(self, model_id: str, exit_code: int, status: QProcess.ExitStatus) -> None:
        assert self._proc is not None
        out = bytes(self._proc.readAllStandardOutput().data()).decode("utf-8", "replace")
        err = bytes(self._proc.readAllStandardError().data()).decode("utf-8", "replace")
        if status == QProcess.ExitStatus.CrashExit or exit_code != 0:
            reason = _last_line(err) or f"evaluation ended with exit code {exit_code}"
            self._finish(f"measuring {model_id} failed: {reason}")
            return
        try:
            self._scores[model_id] = parse_evaluation(model_id, out)
        except (ValueError, KeyError, TypeError) as exc:
            self._finish(f"measuring {model_id} gave no mask AP ({exc})")
            return
        self._next()

    def _process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            assert self._proc is not None
            self._finish(f"could not start {self.python}: {self._proc.errorString()}")

    def _finish(self, error: str) -> None:
        assert self._comparison is not None
        c = self._comparison
        result = Comparison(
            candidate=c.candidate,
            active=c.active,
            candidate_score=self._scores.get(c.candidate),
            active_score=self._scores.get(c.active),
            error=error,
        )
        self._queue = []
        if error:
            log.warning("comparison of %s with %s: %s", c.candidate, c.active, error)
        self.finished.emit(result)
