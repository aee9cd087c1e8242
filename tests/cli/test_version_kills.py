"""A version registration killed at each of its steps leaves nothing the commands can use.

Fault injection, not random kills: a child process registers a version and calls
``os._exit`` (no cleanup, like SIGKILL) right after the chosen step; the commands then see
the project as it was before, or with the whole version after the row's commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.core.store import ProjectStore

REGISTER = """
import os, sys
import torch
from app.core.store import ProjectStore
from app.ml import versions, zoo

project, step = sys.argv[1], sys.argv[2]
real_write = versions.write_bytes_atomic

def write(path, data):
    real_write(path, data)
    if (step, path.suffix) in (("weights", ".pt"), ("card", ".json")):
        os._exit(137)

real_add = ProjectStore.add_model_version

def add(self, *args, **kwargs):
    version = real_add(self, *args, **kwargs)
    if step == "row":
        os._exit(137)  # the row is written, its transaction not committed
    return version

versions.write_bytes_atomic = write
ProjectStore.add_model_version = add
with ProjectStore.open(project) as store:
    versions.register_version(
        store, torch.nn.Linear(2, 2), zoo.get_card("cells-mobile"), parent_id=None,
        categories=store.categories(), metrics={}, images_used=0,
    )
os._exit(137 if step == "committed" else 1)
"""


@pytest.mark.parametrize("step", ["weights", "card", "row", "committed"])
def test_registration_killed_after_each_step(tmp_path: Path, step: str, capsys) -> None:
    project = tmp_path / "p"
    with ProjectStore.create(project) as store:
        store.add_category("nucleus")
    run = subprocess.run(
        [sys.executable, "-c", REGISTER, str(project), step], capture_output=True, text=True
    )
    assert run.returncode == 137, run.stderr
    assert main(["models", "--json", "--project", str(project)]) == 0
    listed = "v1" in {row["id"] for row in json.loads(capsys.readouterr().out)}
    with ProjectStore.open(project) as store:
        assert store.integrity_ok()
        rows = [v.id for v in store.model_versions()]
    assert listed == (step == "committed") and rows == ([1] if listed else [])
    if not listed:
        assert main(["propose", str(project), "--model", "v1"]) == 1
        assert "has no model version v1" in capsys.readouterr().err
