"""TrainProcess reads the trainer's JSON lines as typed events: it skips what a newer
trainer adds and says clearly what is wrong with an event it cannot use."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from app.ml.train_events import IterationEvent, RegisteredEvent
from app.ui.train_process import Outcome, TrainProcess

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="uses a shell script as the interpreter"
)

ITERATION = (
    '{"event": "iteration", "epoch": 0, "iteration": 1, "total_iterations": 2, "loss": 2.5, '
    '"losses": {}, "lr": 0.001, "images_per_s": 1.0, "eta_s": 9.0'
)


def run(qtbot, tmp_path: Path, lines: list[str]):
    """Run a stand-in trainer printing ``lines``; (typed events, result, stderr text)."""
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    process = TrainProcess(python=str(script))
    events = []
    process.event.connect(events.append)
    with qtbot.waitSignal(process.finished, timeout=20_000) as finished:
        process.start(["train"])
    return events, finished.args[0], process.stderr_text()


def test_unknown_kinds_and_keys_are_skipped(qtbot, tmp_path: Path) -> None:
    events, result, stderr = run(
        qtbot,
        tmp_path,
        [
            ITERATION + ', "gpu_gib": 3.5}',
            '{"event": "memory", "gib": 3.5}',
            '{"event": "registered", "version": 2, "metrics": {"segm_AP": 0.5}, "note": "x"}',
        ],
    )
    assert [type(e) for e in events] == [IterationEvent, RegisteredEvent]
    assert events[0].loss == 2.5
    assert result.outcome is Outcome.REGISTERED and result.version == 2
    assert result.metrics == {"segm_AP": 0.5}
    assert "memory" not in stderr


def test_an_event_without_a_needed_field_is_a_clear_failure(qtbot, tmp_path: Path) -> None:
    events, result, stderr = run(
        qtbot, tmp_path, [ITERATION + "}", '{"event": "registered", "metrics": {}}']
    )
    assert [type(e) for e in events] == [IterationEvent]
    assert result.outcome is Outcome.FAILED
    assert "'registered' has no 'version'" in result.message
    assert "'registered' has no 'version'" in stderr
