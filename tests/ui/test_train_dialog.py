"""The Train dialog: a real 2-iteration training of a tiny model in a subprocess registers a
version; Stop registers nothing; failures show what went wrong."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_train_cli import make_project  # noqa: E402

from app.core.store import ProjectStore  # noqa: E402
from app.ml.train_events import EpochEvent, IterationEvent  # noqa: E402
from app.ml.versions import active_model  # noqa: E402
from app.ui.train_dialog import (  # noqa: E402
    Outcome,
    TrainDialog,
    TrainOptions,
    checkpoint_path,
)

RUN_TIMEOUT_MS = 150_000


@pytest.fixture(autouse=True)
def _one_thread_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training subprocess inherits this: one thread is fastest on a busy machine."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def dialog_for(qtbot, store: ProjectStore, **kwargs) -> TrainDialog:
    dialog = TrainDialog(store, **kwargs)
    qtbot.addWidget(dialog)
    return dialog


def choose(dialog: TrainDialog, base: str, *, epochs: int, max_iters: int) -> None:
    dialog.base.setCurrentIndex(dialog.base.findData(base))
    dialog.epochs.setValue(epochs)
    dialog.batch.setValue(2)
    dialog.device.setCurrentText("cpu")
    dialog.max_iters.setValue(max_iters)


@pytest.mark.slow
def test_training_in_a_subprocess_registers_a_version(
    qtbot, tmp_path: Path, tiny_card: str
) -> None:
    project = make_project(tmp_path / "p", n=4)
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store)
        assert "4 done images" in dialog.data_label.text()
        assert dialog.start_button.isEnabled() and not dialog.resume.isVisibleTo(dialog)
        choose(dialog, tiny_card, epochs=1, max_iters=2)
        dialog.name.setText("from the GUI")
        with qtbot.waitSignal(dialog.version_registered, timeout=RUN_TIMEOUT_MS) as signal:
            qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
            assert dialog.stop_button.isEnabled() and not dialog.start_button.isEnabled()
        assert signal.args == [1]
        (version,) = store.model_versions()
        assert (version.id, version.card_id, version.name) == (1, "tiny", "from the GUI")
        assert active_model(store) == "cells-mobile"  # not before it is compared
        with qtbot.waitSignal(dialog.comparison_finished, timeout=RUN_TIMEOUT_MS) as compared:
            pass
        comparison = compared.args[0]
        assert comparison.measured, comparison.error
        better = comparison.candidate_at_least_as_good
        assert active_model(store) == ("v1" if better else "cells-mobile")
        assert "cells-mobile (active) segm AP" in dialog.status.text()
        loss = dialog.loss_plot.series("loss")
        assert loss is not None and loss.xs == [1.0, 2.0]
        ap = dialog.ap_plot.series("AP")
        assert ap is not None and ap.xs == [1.0]
        assert ap.ys == [pytest.approx(version.metrics["segm_AP"])]  # the epoch's own figure
        assert (dialog.progress.value(), dialog.progress.maximum()) == (2, 2)
        assert "v1 segm AP" in dialog.status.text()
        assert "Registered model version v1" in dialog.details.toPlainText()  # stderr
        assert dialog.base.findData("v1") >= 0  # the new version can be trained further
        assert dialog.start_button.isEnabled() and not dialog.stop_button.isEnabled()


@pytest.mark.slow
def test_stop_registers_nothing_and_offers_to_resume(qtbot, tmp_path: Path, tiny_card: str) -> None:
    project = make_project(tmp_path / "p", n=4)
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store)
        choose(dialog, tiny_card, epochs=500, max_iters=0)
        with qtbot.waitSignal(
            dialog.process.event,
            timeout=RUN_TIMEOUT_MS,
            check_params_cb=lambda e: isinstance(e, IterationEvent),
        ):
            dialog.start()
        with qtbot.waitSignal(dialog.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
            qtbot.mouseClick(dialog.stop_button, Qt.MouseButton.LeftButton)
            assert dialog.stop_button.text() == "Stop now"
        result = finished.args[0]
        assert result.outcome is Outcome.CANCELLED and result.exit_code == 130
        assert store.model_versions() == []
        assert active_model(store) == "cells-mobile"
        assert "nothing was registered" in dialog.status.text()
        # The trainer kept its checkpoint: the dialog offers to continue it.
        assert checkpoint_path(project).exists()
        assert dialog.resume.isVisibleTo(dialog) and dialog.resume.isChecked()
        assert "--resume" in dialog.options().arguments(project)
        dialog.resume.setChecked(False)
        assert "--restart" in dialog.options().arguments(project)


def test_no_done_images_disables_training(qtbot, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=2, done=False)
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store)
        assert not dialog.start_button.isEnabled()
        assert "No images are marked done" in dialog.data_label.text()
        dialog.start()
        assert not dialog.process.is_running()
        assert "no image is marked done" in dialog.status.text()


def fake_python(tmp_path: Path, script: str) -> str:
    """An executable standing in for the interpreter, printing what a trainer might."""
    path = tmp_path / "fake_python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_an_error_event_and_stderr_are_shown(qtbot, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=2)
    python = fake_python(
        tmp_path,
        """echo '{"event": "iteration", "epoch": 0, "iteration": 1, "total_iterations": 4, \
"loss": 2.5, "losses": {}, "lr": 0.001, "images_per_s": 1.0, "eta_s": 90.0}'
echo 'not an event'
echo 'Traceback: something broke' >&2
printf '{"event": "error", "message": "The training loss became nan."}'
exit 1
""",
    )
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store, python=python)
        with qtbot.waitSignal(dialog.run_finished, timeout=20_000) as finished:
            dialog.start()
        result = finished.args[0]
        assert result.outcome is Outcome.FAILED and result.exit_code == 1
        assert result.message == "The training loss became nan."
        assert "The training loss became nan." in dialog.status.text()
        assert "Traceback: something broke" in dialog.status.text()  # the stderr tail
        assert "not an event" in dialog.details.toPlainText()
        assert dialog.details_button.isChecked()  # the details open on failure
        assert (dialog.progress.value(), dialog.progress.maximum()) == (1, 4)
        assert dialog.progress_label.text() == "Failed."
        assert store.model_versions() == []


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_a_crash_without_events_shows_the_exit_code(qtbot, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=2)
    python = fake_python(tmp_path, "echo 'Segmentation fault' >&2\nexit 139\n")
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store, python=python)
        with qtbot.waitSignal(dialog.run_finished, timeout=20_000) as finished:
            dialog.start()
        result = finished.args[0]
        assert result.outcome is Outcome.FAILED and "exit code 139" in result.message
        assert "Segmentation fault" in dialog.status.text()


def test_a_missing_interpreter_is_reported(qtbot, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=2)
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store, python=str(tmp_path / "no-such-python"))
        with qtbot.waitSignal(dialog.run_finished, timeout=20_000) as finished:
            dialog.start()
        assert finished.args[0].outcome is Outcome.FAILED
        assert "Could not start" in dialog.status.text()
        assert dialog.start_button.isEnabled()


def test_options_become_train_arguments(tmp_path: Path) -> None:
    opts = TrainOptions(base_model="v3", epochs=5, batch_size=4, device="cuda", max_iters=7)
    assert opts.arguments(tmp_path) == [
        "train", str(tmp_path), "--base-model", "v3", "--epochs", "5", "--batch-size", "4",
        "--device", "cuda", "--max-iters", "7", "--no-activate", "--events-json",
    ]  # fmt: skip
    resumed = TrainOptions(base_model="v3", resume=True, activate_if_better=False, name="x")
    args = resumed.arguments(tmp_path)
    assert "--resume" in args and "--base-model" not in args
    assert args[-4:] == ["--name", "x", "--no-activate", "--events-json"]


def test_progress_shows_eta_and_epoch_ap(qtbot, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=2)
    with ProjectStore.open(project) as store:
        dialog = dialog_for(qtbot, store)
        dialog.process.event.emit(
            IterationEvent(
                epoch=1, iteration=3, total_iterations=8, loss=1.25, losses={}, lr=1e-4,
                images_per_s=2.0, eta_s=90.0,
            )
        )  # fmt: skip
        assert (dialog.progress.value(), dialog.progress.maximum()) == (3, 8)
        text = dialog.progress_label.text()
        assert "Epoch 2, iteration 3 of 8" in text and "1:30 left" in text
        metrics = {"segm_AP": 0.25, "segm_AP50": 0.5}
        dialog.process.event.emit(EpochEvent(epoch=1, checkpoint=None, metrics=metrics))
        assert dialog.ap_plot.series("AP50").ys == [0.5]
        assert "segm AP 0.250, AP50 0.500" in dialog.progress_label.text()
        dialog.grab()  # the plots paint with data
