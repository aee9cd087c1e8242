"""``maskloop train --events-json``: stdout is one JSON event per line, ending with the
registered version or the error (what the GUI's Train dialog reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_cli import TRAIN, make_project
from test_train_cli import _one_torch_thread as _one_torch_thread  # noqa: F401 (autouse)

from app.cli import main
from app.core.store import ProjectStore
from app.ml.train_events import FinishedEvent, IterationEvent, RegisteredEvent, from_dict


def events(out: str) -> list[dict]:
    lines = [line for line in out.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # any non-JSON line on stdout fails here


def test_events_json_streams_progress_and_the_registered_version(
    tmp_path: Path, tiny_card: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path / "p")
    args = ["train", str(project), "--base-model", tiny_card, *TRAIN, "--events-json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    evs = events(captured.out)
    kinds = [e["event"] for e in evs]
    assert kinds == ["iteration", "iteration", "epoch", "finished", "registered"]
    assert [e["iteration"] for e in evs[:2]] == [1, 2]
    assert all(e["total_iterations"] == 2 and e["eta_s"] >= 0 for e in evs[:2])
    assert "segm_AP" in evs[2]["metrics"] and evs[3]["cancelled"] is False
    assert evs[-1]["version"] == 1 and evs[-1]["metrics"]["segm_AP"] == evs[2]["metrics"]["segm_AP"]
    typed = [from_dict(e) for e in evs]  # what the Train dialog reads back
    assert isinstance(typed[0], IterationEvent) and isinstance(typed[3], FinishedEvent)
    assert typed[-1] == RegisteredEvent(1, evs[-1]["metrics"])
    assert "Registered model version v1" in captured.err  # messages for people: stderr
    with ProjectStore.open(project) as store:
        assert [v.id for v in store.model_versions()] == [1]


def test_events_json_ends_with_an_error_line(
    tmp_path: Path, tiny_card: str, capsys: pytest.CaptureFixture[str]
) -> None:
    undone = make_project(tmp_path / "undone", n=2, done=False)
    args = ["train", str(undone), "--base-model", tiny_card, *TRAIN, "--events-json"]
    assert main(args) == 1
    captured = capsys.readouterr()
    (last,) = events(captured.out)
    assert last["event"] == "error" and "marked done" in last["message"]
    assert "marked done" in captured.err


def test_without_the_flag_stdout_has_no_json(
    tmp_path: Path, tiny_card: str, capsys: pytest.CaptureFixture[str]
) -> None:
    undone = make_project(tmp_path / "undone", n=2, done=False)
    assert main(["train", str(undone), "--base-model", tiny_card, *TRAIN]) == 1
    assert capsys.readouterr().out == ""
