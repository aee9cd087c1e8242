"""The Simplify tolerance in the window: the toolbar box sets how many vertices the next
brush result and assist answer get, never re-traces what is there, is saved with the
project, and the status bar shows the selection's vertex count."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from canvas_helpers import drag, open_main_window, square
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from app.core.simplify_tolerance import TOLERANCE_KEY
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance
from app.ui.panels.model_panel import ModelEntry
from app.ui.simplify_setting import vertex_count
from app.ui.workers import ModelChoice, ProposalController


@pytest.fixture
def window(qtbot, project):
    win = open_main_window(qtbot, project)
    yield win
    win.close()
    win.store.close()


def brush_a_disc(win) -> Instance:
    """A new instance from one brush dab of radius 20 on the empty second image."""
    QTest.keyClick(win.canvas, Qt.Key.Key_Escape)
    win.canvas.set_tool("brush")
    win.canvas.set_brush_radius(20)
    before = {i.id for i in win.store.instances(2)}
    drag(win.canvas, [(100, 100), (101, 100)])
    (new,) = [i for i in win.store.instances(2) if i.id not in before]
    return new


def vertices(instance: Instance) -> int:
    return sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in instance.polygons)


def test_the_tolerance_sets_the_vertex_count_of_the_next_brush_result(window):
    win = window
    win.next_image()
    assert win.simplify_box.value() == pytest.approx(1.4)
    assert "Simplify tolerance" in win.simplify_box.toolTip()
    win.simplify_box.setValue(0.0)
    exact = brush_a_disc(win)
    assert win.vertex_label.text() == f"{vertices(exact)} vertices"  # it is selected
    win.simplify_box.setValue(3.0)
    assert win.store.instance(exact.id).polygons == exact.polygons  # not re-traced
    smooth = brush_a_disc(win)
    assert 8 <= vertices(smooth) < vertices(exact) / 4
    assert win.vertex_label.text() == f"{vertices(smooth)} vertices"
    assert win.store.get_meta(TOLERANCE_KEY) == "3.0"


def test_the_vertex_count_follows_the_selection_and_edits(window):
    win, canvas = window, window.canvas
    first, second = (i.id for i in win.store.instances(1))
    canvas.set_selection([first])
    assert win.vertex_label.text() == "4 vertices"  # the conftest squares
    canvas.set_selection([first, second])
    assert win.vertex_label.text() == "2 selected, 8 vertices"
    canvas.set_selection([first])
    canvas.set_tool("brush")
    canvas.set_brush_radius(6)
    drag(canvas, [(50, 35), (58, 35)])  # grows the square on its right edge
    edited = win.store.instance(first)
    assert vertices(edited) > 4
    assert win.vertex_label.text() == f"{vertices(edited)} vertices"
    canvas.set_selection([])
    assert win.vertex_label.text() == ""
    assert vertex_count(win.editor.doc, [first, second]) == vertices(edited) + 4


def test_the_tolerance_is_saved_with_the_project(qtbot, project):
    win = open_main_window(qtbot, project)
    win.simplify_box.setValue(0.6)
    win.close()
    win.store.close()
    again = open_main_window(qtbot, project)
    try:
        assert again.simplify_box.value() == pytest.approx(0.6)
    finally:
        again.close()
        again.store.close()


@pytest.fixture
def blob_project(tmp_path):
    """One 64x64 image a person has started, so no proposal run competes with the assist."""
    root = tmp_path / "p"
    (root / "img").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "img" / "0.png"), cv2.GaussianBlur(noise, (5, 5), 0))
    with ProjectStore.open(root, create=True) as s:
        s.add_images([NewImage("img/0.png", 64, 64)])
        s.add_category("cell")
        s.apply_edit(1, status=ImageStatus.IN_PROGRESS)
    return root


def test_the_tolerance_reaches_the_assists_of_the_proposal_worker(
    qtbot, blob_project, install_tiny_card
):
    """With its mask logits centred on the threshold the tiny random model's masks are
    irregular blobs: refining the same square twice gives the same mask, traced with the
    tolerance of the moment."""
    model = install_tiny_card(mask_bias=0.4)
    win = open_main_window(qtbot, blob_project)
    controller = ProposalController(
        blob_project,
        choice=ModelChoice(model, "cpu"),
        predictor_factory=win.simplify.predictor_factory(),  # as the app builds it
    )
    try:
        win.attach_proposals(controller, [ModelEntry(model, "tiny")])
        (made,) = win.store.apply_edit(1, add=[Instance(1, [square(12, 12, 36)])])
        counts = {}
        for px in (0.0, 3.0):
            win.simplify_box.setValue(px)
            win.editor.reload_current()
            win.canvas.set_selection([made.id])
            stack = win.editor.undo_group.activeStack()
            with qtbot.waitSignal(controller.assist_ready, timeout=20000):
                win.refine_action.trigger()
            qtbot.waitUntil(lambda s=stack: s.count() == 1, timeout=5000)
            counts[px] = vertices(win.store.instance(made.id))
            assert win.vertex_label.text() == f"{counts[px]} vertices"
            win.undo_action.trigger()
            stack.clear()
        assert counts[3.0] < counts[0.0] / 2, counts
    finally:
        win.close()
        win.store.close()
        controller.shutdown()
