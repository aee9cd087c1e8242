"""Start-up cost of the command line: parsing must not load the heavy libraries.

``maskloop --version`` took seconds when the command modules imported torch at module level.
Each check runs in a fresh interpreter, since this test process has long imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app import __version__
from app.cli import build_parser
from app.core.coco_options import Crowd, Segmentation
from app.ml.defaults import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "cv2", "pycocotools", "PySide6")

# Prints, as JSON, the heavy modules that building the parser, then each command's
# ``--help``, loaded first (a step lists only what no earlier step loaded).
LOADED_BY = f"""
import argparse, contextlib, io, json, sys
from app.cli import build_parser

heavy, seen, report = {HEAVY!r}, set(), {{}}

def note(step):
    report[step] = [m for m in heavy if m in sys.modules and m not in seen]
    seen.update(report[step])

parser = build_parser()
note("build_parser")
commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
for name in commands.choices:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        build_parser().parse_args([name, "--help"])
    note(name + " --help")
print(json.dumps(report))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_parsing_imports_no_heavy_module() -> None:
    done = _python("-c", LOADED_BY)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "train --help" in report and "export-coco --help" in report  # every command ran
    offenders = {step: mods for step, mods in report.items() if mods}
    assert not offenders, (
        f"imported while only parsing the command line: {offenders}; find the import with "
        "`python -X importtime -m app.cli --version`"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--version"], f"maskloop {__version__}"),
        (["--help"], "usage: maskloop"),
        (["train", "--help"], "--optimizer {adamw,sgd}"),
    ],
)
def test_module_entry_point_answers(argv: list[str], expected: str) -> None:
    done = _python("-m", "app.cli", *argv)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


@pytest.mark.parametrize(
    ("argv", "choices"),
    [
        (["train", "p", "--optimizer", "lion"], OPTIMIZERS),
        (
            ["export-coco", "p", "out.json", "--segmentation", "mesh"],
            [s.value for s in Segmentation],
        ),
        (
            ["import-coco", "p", "c.json", "--images-root", "i", "--crowd", "merge"],
            [c.value for c in Crowd],
        ),
    ],
)
def test_choices_are_checked_when_parsing(
    argv: list[str], choices: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid choice: {argv[-1]!r}" in err
    assert all(c in err.split("choose from")[1] for c in choices)
    good = build_parser().parse_args([*argv[:-1], choices[-1]])
    assert choices[-1] in vars(good).values()


def test_models_help_names_the_user_models_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no line wrap inside the path
    monkeypatch.setenv("MASKLOOP_MODELS_DIR", str(tmp_path / "my-cards"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["models", "--help"])
    assert f"cards in {tmp_path / 'my-cards'} (or $MASKLOOP_MODELS_DIR)" in capsys.readouterr().out
