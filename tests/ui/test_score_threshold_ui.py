"""The one score threshold in the window: the slider shows its value, lowering it shows
more of the stored proposals at once (no model runs: none is attached), it is saved in the
project, and Ctrl+Enter follows the done rule for the proposals it hides."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QProgressDialog, QPushButton

from app.core import scan as scan_module
from app.core.score_threshold import LEGACY_STORE_KEY, project_threshold
from app.core.store import ProjectStore
from app.core.types import ImageStatus
from app.ui import file_menu as file_menu_module
from app.ui.interchange_dialogs import ExportChoice, ImportChoice, Kind
from app.ui.main_window import MainWindow
from app.ui.preferences import settings
from app.ui.project_view_state import ProjectViewState, save_view_state


@pytest.fixture
def store(project):
    s = ProjectStore.open(project)
    yield s
    s.close()


@pytest.fixture
def window(qtbot, store):
    win = MainWindow(store)
    qtbot.addWidget(win)
    yield win
    win.close()


def test_lowering_the_slider_shows_more_stored_proposals_at_once(window):
    win = window
    assert win.threshold.value() == 50 and win.threshold_label.text() == "0.50"
    assert len(win.editor.review_order()) == 1  # 0.9 shown, 0.3 hidden
    assert "(1 hidden below the slider)" in win.status_label.text()
    win.threshold.setValue(25)
    assert win.threshold_label.text() == "0.25"
    assert len(win.editor.review_order()) == 2
    assert len(win.instances.shown_ids()) == 2
    win.threshold.setValue(95)
    assert win.editor.review_order() == [] and win.instances.shown_ids() == []
    assert win.threshold.minimum() == 5  # the floor proposals are stored down to


def test_the_threshold_is_saved_in_the_project_and_restored(qtbot, window, store):
    window.threshold.setValue(37)
    assert project_threshold(store) == 0.37  # saved as it changes, not only on close
    window.close()
    settings().remove("projects")  # the window's own settings gone: the project keeps it
    again = MainWindow(store)
    qtbot.addWidget(again)
    assert again.threshold.value() == 37 and again.threshold_label.text() == "0.37"
    assert again.editor.threshold == pytest.approx(0.37)
    again.close()


def test_an_old_project_opens_with_the_higher_of_its_two_thresholds(qtbot, store):
    store.set_meta(LEGACY_STORE_KEY, "0.40")
    save_view_state(settings(), store.root, ProjectViewState(None, None))
    settings().setValue(
        f"projects/{_group(store)}/threshold", 60
    )  # the old per-project slider value
    win = MainWindow(store)
    qtbot.addWidget(win)
    assert win.threshold.value() == 60 and project_threshold(store) == 0.6
    win.close()


def _group(store) -> str:
    return hashlib.sha1(str(store.root.resolve()).encode()).hexdigest()[:16]


def test_ctrl_enter_accepts_the_shown_and_rejects_the_hidden(window, store):
    win = window
    win.threshold.setValue(50)
    image = win.current_image_id()
    win.done_and_next()
    assert store.image(image).status is ImageStatus.DONE
    assert [i.score for i in store.instances(image)] == [0.9]  # 0.3 was hidden: rejected
    assert "rejected 1 hidden below score 0.50" in win.statusBar().currentMessage()
    (outcome,) = store.proposal_outcomes()
    assert (outcome.accepted, outcome.rejected) == (1, 0)  # nobody saw the hidden one


# -- progress of imports and exports ---------------------------------------------------------


def _label_maps(folder, n=2):
    folder.mkdir()
    for name in ("a", "b")[:n]:
        labels = np.zeros((200, 200), np.uint16)
        labels[10:60, 10:60] = 1
        Image.fromarray(labels).save(folder / f"{name}.png")


class Gate:
    """Holds an operation at its second step until the test has pressed Cancel: the first
    file is done by then, and the end is never reached before the cancel."""

    def __init__(self) -> None:
        self.reached, self.pressed = threading.Event(), threading.Event()


def _gated(real, seen, gate):
    """``real`` with its progress recorded (and held by ``gate``, if any)."""

    def run(*args, progress=None, **kwargs):
        def step(done, total):
            seen.append((done, total))
            if done == 1 and gate is not None:
                gate.reached.set()
                gate.pressed.wait(10)
            progress(done, total)

        return real(*args, progress=step, **kwargs)

    return run


def _press_cancel(window, gate):
    def press():
        gate.reached.wait(10)  # the worker waits for us: the GUI thread may block briefly
        dialogs = [d for d in window.findChildren(QProgressDialog) if not d.wasCanceled()]
        dialogs[-1].findChild(QPushButton).click()  # the dialog's Cancel button
        gate.pressed.set()

    QTimer.singleShot(0, press)


def test_import_progress_reaches_the_total(window, tmp_path, monkeypatch):
    seen: list = []
    real = file_menu_module.import_label_maps
    monkeypatch.setattr(file_menu_module, "import_label_maps", _gated(real, seen, None))
    _label_maps(tmp_path / "maps")
    report = window.file_menu.run_import(
        ImportChoice(Kind.LABEL_MAPS, tmp_path / "maps", replace=True)
    )
    assert report is not None and report.images == 2
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)


def test_cancelling_an_import_leaves_the_project_as_it_was(window, store, tmp_path, monkeypatch):
    seen: list = []
    gate = Gate()
    real = file_menu_module.import_label_maps
    monkeypatch.setattr(file_menu_module, "import_label_maps", _gated(real, seen, gate))
    _label_maps(tmp_path / "maps")
    before = [(r.id, r.status, len(store.instances(r.id))) for r in store.images()]
    _press_cancel(window, gate)
    choice = ImportChoice(Kind.LABEL_MAPS, tmp_path / "maps", replace=True)
    assert window.file_menu.run_import(choice) is None
    assert "Import cancelled" in window.file_menu.last_message
    assert [(r.id, r.status, len(store.instances(r.id))) for r in store.images()] == before
    assert (1, 2) in seen and (2, 2) not in seen


def test_cancelling_an_export_leaves_no_file_behind(window, tmp_path, monkeypatch):
    win = window
    win.threshold.setValue(5)
    win.editor.mark_done()
    win.open_image(2)
    win.editor.mark_done()  # two done images: two label maps to write
    gate = Gate()
    seen: list = []
    real = file_menu_module.export_label_maps
    monkeypatch.setattr(file_menu_module, "export_label_maps", _gated(real, seen, gate))
    _press_cancel(win, gate)
    out = tmp_path / "maps"
    assert win.file_menu.run_export(ExportChoice(Kind.LABEL_MAPS, out)) is None
    assert "Export cancelled" in win.file_menu.last_message
    assert not out.exists() and (1, 2) in seen


def test_cancelling_a_folder_scan_says_what_it_kept(window, store, tmp_path, monkeypatch):
    folder = tmp_path / "more"
    folder.mkdir()
    for name in ("x", "y", "z"):
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / f"{name}.png")
    monkeypatch.setattr(scan_module, "PROGRESS_EVERY", 1)  # a chance to stop at every file
    seen: list = []
    gate = Gate()
    real = file_menu_module.scan_folder
    monkeypatch.setattr(file_menu_module, "scan_folder", _gated(real, seen, gate))
    before = [r.path for r in store.images()]
    _press_cancel(window, gate)
    assert window.file_menu.rescan(folder) is None
    assert "Scanning stopped" in window.file_menu.last_message
    assert (1, 3) in seen and (3, 3) not in seen
    assert [r.path for r in store.images()] == before  # stopped before its first commit
    monkeypatch.setattr(file_menu_module, "scan_folder", real)
    report = window.file_menu.rescan(folder)  # running it again completes it
    assert report is not None and report.added == 3


def test_the_uncertainty_follows_the_threshold_without_a_model(qtbot, window, store):
    store.set_proposed_by(1, "fake")  # image 1's proposals (0.9, 0.3) came from a model
    store.set_uncertainty(1, 0.4)  # 0.1 + 0.3 at 0.5
    with qtbot.waitSignal(window.rescorer.rescored, timeout=10000):
        window.threshold.setValue(20)
    assert store.image(1).uncertainty == pytest.approx(0.1 + 0.7)  # 0.3 is now shown
    assert "0.8 expected fixes" in window.images.list.item(0).text()
