"""A trained version becomes active only when it scores at least as well as the active model
on the same validation images, or when the person chooses it; training with other
categories than the base model's asks first. The trainer and evaluator are stand-in scripts
that print what ``maskloop train/evaluate`` print, so every branch is exercised quickly."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_train_cli import make_project  # noqa: E402

from app.core.store import ProjectStore  # noqa: E402
from app.core.types import Category  # noqa: E402
from app.ml.versions import active_model  # noqa: E402
from app.ui.model_comparison import Comparison, ModelScore, parse_evaluation  # noqa: E402
from app.ui.train_dialog import TrainDialog, TrainOptions  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="stand-in scripts use sh")

TIMEOUT_MS = 20_000


def stand_in(tmp_path: Path, *, new_ap: str, active_ap: str, evaluate_fails: bool = False) -> str:
    """An 'interpreter' whose train registers v1 and whose evaluate prints these APs."""
    json_line = 'echo "{\\"segm\\": {\\"AP\\": $ap}, \\"images\\": 3}"'
    evaluate = (
        "echo 'error: No done images in the val split of the project.' >&2; exit 1"
        if evaluate_fails
        else f'case "$6" in v1) ap={new_ap};; *) ap={active_ap};; esac; {json_line}'
    )
    path = tmp_path / "stand_in_python"
    path.write_text(
        "#!/bin/sh\n"
        'case "$3" in\n'
        'train) echo \'{"event": "registered", "version": 1, "metrics": '
        '{"segm_AP": 0.5}}\'; exit 0;;\n'
        f"evaluate) {evaluate};;\n"
        "esac\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def store(tmp_path: Path):
    project = make_project(tmp_path / "p", n=3)
    with ProjectStore.open(project) as s:
        s.add_model_version(  # the row the stand-in trainer "registers"
            "cells-mobile", "models/v1.pt", categories=[Category(1, "nucleus")], metrics={}
        )
        yield s


def train_and_compare(qtbot, dialog: TrainDialog) -> Comparison:
    with qtbot.waitSignal(dialog.comparison_finished, timeout=TIMEOUT_MS) as done:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    return done.args[0]


def test_a_worse_version_stays_inactive_until_the_person_chooses_it(qtbot, tmp_path, store):
    dialog = TrainDialog(store, python=stand_in(tmp_path, new_ap="0.789", active_ap="0.900"))
    qtbot.addWidget(dialog)
    assert dialog.activate.isChecked()  # guarded: only if at least as good
    comparison = train_and_compare(qtbot, dialog)
    assert comparison.measured and not comparison.candidate_at_least_as_good
    assert active_model(store) == "cells-mobile"
    status = dialog.status.text()
    assert "v1 segm AP 0.789" in status and "cells-mobile (active) segm AP 0.900" in status
    assert "not active" in status and "3 validation images" in status
    assert dialog.activate_button.isVisibleTo(dialog)
    assert dialog.start_button.isEnabled() and not dialog.stop_button.isEnabled()
    with qtbot.waitSignal(dialog.version_activated) as activated:
        qtbot.mouseClick(dialog.activate_button, Qt.MouseButton.LeftButton)
    assert activated.args == ["v1"] and active_model(store) == "v1"
    assert dialog.status.text() == "v1 is now the active model (your choice)."
    assert not dialog.activate_button.isVisibleTo(dialog)


def test_an_equally_good_version_becomes_active(qtbot, tmp_path, store):
    dialog = TrainDialog(store, python=stand_in(tmp_path, new_ap="0.9", active_ap="0.9"))
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.version_activated, timeout=TIMEOUT_MS) as activated:
        dialog.start()
    assert activated.args == ["v1"] and active_model(store) == "v1"
    assert "v1 is now the active model" in dialog.status.text()
    assert not dialog.activate_button.isVisibleTo(dialog)


def test_unticked_a_better_version_is_only_offered(qtbot, tmp_path, store):
    dialog = TrainDialog(store, python=stand_in(tmp_path, new_ap="0.95", active_ap="0.5"))
    qtbot.addWidget(dialog)
    dialog.activate.setChecked(False)
    comparison = train_and_compare(qtbot, dialog)
    assert comparison.candidate_at_least_as_good
    assert active_model(store) == "cells-mobile"
    assert "unticked" in dialog.status.text() and dialog.activate_button.isVisibleTo(dialog)


def test_a_failed_comparison_activates_nothing(qtbot, tmp_path, store):
    python = stand_in(tmp_path, new_ap="1", active_ap="0", evaluate_fails=True)
    dialog = TrainDialog(store, python=python)
    qtbot.addWidget(dialog)
    comparison = train_and_compare(qtbot, dialog)
    assert not comparison.measured and "No done images in the val split" in comparison.error
    assert active_model(store) == "cells-mobile"
    assert "could not be compared" in dialog.status.text()
    assert dialog.activate_button.isVisibleTo(dialog)


def test_other_categories_than_the_base_model_warn_and_ask_first(
    qtbot, tmp_path, store, monkeypatch
):
    dialog = TrainDialog(store, python=stand_in(tmp_path, new_ap="0", active_ap="0.9"))
    qtbot.addWidget(dialog)
    dialog.base.setCurrentIndex(dialog.base.findData("cells-mobile"))
    assert dialog.heads_warning() == "" and not dialog.heads_label.isVisibleTo(dialog)
    store.add_category("debris")
    dialog.refresh()
    assert "heads start from scratch" in dialog.heads_label.text()
    assert dialog.heads_label.isVisibleTo(dialog)
    asked: list[str] = []

    def answer(button):
        def question(parent, title, text, *args):
            asked.append(text)
            return button

        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Cancel))
    dialog.start()
    assert len(asked) == 1 and "nucleus, debris" in asked[0]
    assert not dialog.busy() and dialog.progress_label.text() == "Not started."
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    with qtbot.waitSignal(dialog.comparison_finished, timeout=TIMEOUT_MS):
        dialog.start()
    assert len(asked) == 2 and active_model(store) == "cells-mobile"


def test_the_gui_never_lets_the_trainer_activate(tmp_path):
    for opts in (TrainOptions(), TrainOptions(activate_if_better=False)):
        assert "--no-activate" in opts.arguments(tmp_path)


def test_comparison_rule_and_evaluate_output():
    score = parse_evaluation("v2", '{"segm": {"AP": 0.41}, "images": 5, "bbox": {}}')
    assert score == ModelScore("v2", 0.41, 5)
    equal = Comparison("v2", "v1", score, ModelScore("v1", 0.41, 5))
    assert equal.candidate_at_least_as_good
    worse = Comparison("v2", "v1", score, ModelScore("v1", 0.42, 5))
    assert not worse.candidate_at_least_as_good
    assert not Comparison("v2", "v1", score, None, "offline").candidate_at_least_as_good
    with pytest.raises(ValueError):
        parse_evaluation("v2", "Traceback")


def test_trainer_hints_are_worded_for_the_dialog():
    from app.ui.train_dialog import gui_wording

    stopping = "Stopping after this iteration (Ctrl-C again to abort without a checkpoint)..."
    assert "Ctrl-C" not in gui_wording(stopping) and "Stop now" in gui_wording(stopping)
    resume = "The checkpoint is in /p/models/checkpoints. Continue with: maskloop train /p --resume"
    assert gui_wording(resume).endswith("Press Train to continue it.")
