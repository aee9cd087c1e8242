"""Drive the real main window: draw, drag a vertex, brush a hole, review, undo/redo, reopen."""

from __future__ import annotations

import numpy as np
import pytest
from canvas_helpers import click, drag, snapshot
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from app.core.geometry import polygons_to_mask
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Source


def undo_all(win) -> None:
    while win.undo_action.isEnabled():
        win.undo_action.trigger()


def redo_all(win) -> None:
    while win.redo_action.isEnabled():
        win.redo_action.trigger()


def test_edit_review_undo_redo_and_reopen(window, project):
    win, store, canvas = window, window.store, window.canvas
    assert win.current_image_id() == 1
    start = snapshot(store)

    # Draw a polygon: click points, Backspace drops the stray one, Enter closes.
    canvas.set_tool("polygon")
    for x, y in [(70, 70), (110, 70), (110, 110), (150, 150)]:
        click(canvas, x, y)
    QTest.keyClick(canvas, Qt.Key.Key_Backspace)
    click(canvas, 70, 110)
    QTest.keyClick(canvas, Qt.Key.Key_Return)
    human = [i for i in store.instances(1) if i.source == Source.HUMAN]
    assert len(human) == 1 and len(human[0].polygons[0].exterior) == 4
    new_id = human[0].id
    assert canvas.selection() == [new_id]
    assert store.image(1).status == ImageStatus.IN_PROGRESS

    # Drag a vertex twice: consecutive drags of one vertex are one undo step.
    canvas.set_tool("select")
    depth = win.editor.undo_group.activeStack().count()
    handle = next(h for h in canvas.single_editor().handles() if h.key == (0, 0, 0))
    x0, y0 = handle.pos().x(), handle.pos().y()
    drag(canvas, [(x0, y0), (x0 - 5, y0 - 2), (x0 - 10, y0 - 5)])
    handle = next(h for h in canvas.single_editor().handles() if h.key == (0, 0, 0))
    drag(canvas, [(handle.pos().x(), handle.pos().y()), (x0 - 12, y0 - 8)])
    assert win.editor.undo_group.activeStack().count() == depth + 1
    moved = store.instance(new_id).polygons[0].exterior[0]
    assert moved[0] == pytest.approx(x0 - 12, abs=1.0) and moved[1] == pytest.approx(
        y0 - 8, abs=1.0
    )

    # Erase a hole in the middle of the drawn instance.
    canvas.set_tool("eraser")
    canvas.set_brush_radius(5)
    drag(canvas, [(90, 90), (91, 91)])
    holed = store.instance(new_id)
    assert holed.has_holes
    mask = polygons_to_mask(holed.polygons, 200, 200)
    assert not mask[90, 90] and mask[75, 100]

    # Review: select the high-score proposal and accept with A; reject the other with R.
    canvas.set_tool("select")
    click(canvas, 35, 35)
    proposal = canvas.selection()[0]
    assert store.instance(proposal).source == Source.MODEL
    QTest.keyClick(canvas, Qt.Key.Key_A)
    assert win.editor.doc.accepted == {proposal}
    win.threshold.setValue(0)
    click(canvas, 135, 135)
    QTest.keyClick(canvas, Qt.Key.Key_R)
    assert len(store.instances(1)) == 2
    # A digit key changes the category of the selection (and makes a proposal edited).
    click(canvas, 35, 35)
    QTest.keyClick(canvas, Qt.Key.Key_2)
    assert store.instance(proposal).category_id == 2
    assert store.instance(proposal).source == Source.MODEL_EDITED

    end = snapshot(store)
    undo_all(win)
    assert snapshot(store) == start
    redo_all(win)
    assert snapshot(store) == end

    # Switching images keeps a separate history; going back restores it.
    win.next_image()
    assert win.current_image_id() == 2
    assert not win.undo_action.isEnabled()
    win.previous_image()
    assert win.current_image_id() == 1 and win.undo_action.isEnabled()

    # Mark done and go to the next image needing review (Ctrl+Enter).
    QTest.keyClick(canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert store.image(1).status == ImageStatus.DONE
    assert win.current_image_id() == 2
    final = snapshot(store)

    win.close()
    store.close()
    with ProjectStore.open(project) as reopened:
        assert snapshot(reopened) == final


def test_accept_all_is_one_step_and_threshold_hides(window):
    win, canvas = window, window.canvas
    layer = canvas.canvas_scene.layer
    win.threshold.setValue(50)
    shown = [i for i in layer.ids() if layer.is_shown(i)]
    assert len(shown) == 1
    win.threshold.setValue(0)
    assert all(layer.is_shown(i) for i in layer.ids())
    win.threshold.setValue(50)
    QTest.keyClick(canvas, Qt.Key.Key_A, Qt.KeyboardModifier.ShiftModifier)
    stack = win.editor.undo_group.activeStack()
    assert stack.count() == 1
    assert len(win.editor.doc.accepted) == 1 and len(win.editor.doc.pending_ids()) == 1
    win.undo_action.trigger()
    assert win.editor.doc.accepted == set()


def test_brush_paints_new_instance_and_merge(window):
    win, canvas, store = window, window.canvas, window.store
    win.next_image()
    canvas.set_tool("brush")
    canvas.set_brush_radius(6)
    drag(canvas, [(30, 30), (60, 30)])
    # The new instance stays selected, so a second stroke adds to it ...
    drag(canvas, [(30, 40), (60, 40)])
    assert len(store.instances(2)) == 1
    # ... and after Esc (nothing selected) a stroke starts another instance.
    QTest.keyClick(canvas, Qt.Key.Key_Escape)
    drag(canvas, [(30, 100), (60, 100)])
    ids = [i.id for i in store.instances(2)]
    assert len(ids) == 2
    canvas.set_tool("select")
    canvas.set_selection(ids)
    QTest.keyClick(canvas, Qt.Key.Key_M)
    (merged,) = store.instances(2)
    assert len(merged.polygons) == 2
    QTest.keyClick(canvas, Qt.Key.Key_Delete)
    assert store.instances(2) == []


def test_display_settings_change_pixels_not_instances(window):
    win = window
    before = win.canvas.canvas_scene.image_item.pixmap().toImage()
    win.display.auto.setChecked(False)
    win.display.low.setValue(0)
    win.display.high.setValue(65535)
    after = win.canvas.canvas_scene.image_item.pixmap().toImage()
    assert before != after
    # Manual 0..65535 makes this 100..4000 image dark.
    assert np.mean([after.pixelColor(x, 100).red() for x in range(0, 200, 10)]) < 20
    win.display.gamma.setValue(0.3)
    brighter = win.canvas.canvas_scene.image_item.pixmap().toImage()
    assert brighter.pixelColor(100, 100).red() > after.pixelColor(100, 100).red()
