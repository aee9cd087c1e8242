"""Shift+click adds the clicked object's region to the selected instance, Alt+click (or
Ctrl+Shift+click) removes it, in the box tool (Q).

The click goes through the real worker path with the tiny model (see test_assist_ui);
where a test needs an exact region, the model's click answer is fixed by patching
:meth:`Assistant.click`, which the worker still calls on its own thread.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import test_assist_ui
from canvas_helpers import click, square
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.core.geometry import polygons_to_mask
from app.core.types import Instance, Polygon, Provenance, Source
from app.ml.assist import Assistant
from app.ui.help_dialog import HELP_TEXT
from app.ui.workers import ModelChoice

SIZE = 64
project, solid = test_assist_ui.project, test_assist_ui.solid  # the same fixtures
SHIFT, ALT = Qt.KeyboardModifier.ShiftModifier, Qt.KeyboardModifier.AltModifier
CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def answer(monkeypatch):
    """Make the model's click answer ``polygons`` (set by the test); records the thread
    and the point each click was asked for."""
    calls: list[tuple[str, tuple[float, float]]] = []
    fixed: list[list[Polygon]] = []

    def fake_click(self, image, point, **_kwargs) -> Instance:
        calls.append((threading.current_thread().name, point))
        return Instance(1, [p.copy() for p in fixed[-1]])

    monkeypatch.setattr(Assistant, "click", fake_click)
    return fixed, calls


def held_clicks(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Assistant.click waits for ``release`` (after setting ``started``) before answering."""
    started, release = threading.Event(), threading.Event()

    def held_click(self, image, point, **_kwargs) -> Instance:
        started.set()
        release.wait(20)
        return Instance(1, [square(30, 30, 10)])

    monkeypatch.setattr(Assistant, "click", held_click)
    return started, release


def pixels(instance: Instance) -> np.ndarray:
    return polygons_to_mask(instance.polygons, SIZE, SIZE)


def select_new(window, instance: Instance) -> Instance:
    (made,) = window.store.apply_edit(window.current_image_id(), add=[instance])
    window.editor.reload_current()
    window.canvas.set_selection([made.id])
    window.tool_actions["box"].trigger()
    return made


def region_click(qtbot, window, controller, x, y, mods) -> None:
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        click(window.canvas, x, y, mods)
    QApplication.processEvents()  # the window's slot was queued before waitSignal's


def test_shift_click_unites_the_object_under_it_with_the_selected_instance(qtbot, solid):
    window, controller = solid
    proposal = Instance(1, [square(8, 8, 14)], score=0.9, source=Source.MODEL)
    made = select_new(window, proposal)
    before = pixels(made)
    region_click(qtbot, window, controller, 45, 45, SHIFT)
    stack = window.editor.undo_group.activeStack()
    assert stack.count() == 1 and stack.text(0) == "Add region"
    after = window.store.instance(made.id)
    grown = pixels(after)
    assert grown[45, 45] and np.all(grown[before])  # the clicked object joined the outline
    assert grown.sum() > before.sum()
    assert after.category_id == 1 and len(window.store.instances(made.image_id)) == 1
    assert after.source == Source.MODEL_EDITED and after.provenance == Provenance.EDITED
    assert "Add region: done" in window.statusBar().currentMessage()
    window.undo_action.trigger()
    back = window.store.instance(made.id)
    assert back.polygons == made.polygons and back.made_as == Provenance.PROPOSAL


def test_a_disjoint_region_makes_a_multi_part_instance(qtbot, solid, answer):
    window, controller = solid
    fixed, calls = answer
    fixed.append([square(40, 40, 10)])
    made = select_new(window, Instance(1, [square(8, 8, 14)]))
    region_click(qtbot, window, controller, 45, 45, SHIFT)
    after = window.store.instance(made.id)
    assert len(after.polygons) == 2 and pixels(after).sum() == 14 * 14 + 10 * 10
    assert after.provenance == Provenance.DRAWN  # a person's outline stays drawn
    ((thread, point),) = calls
    assert thread != threading.main_thread().name  # answered on the model's thread
    assert np.allclose(point, (45, 45), atol=1.0)


@pytest.mark.parametrize("mods", [ALT, CTRL_SHIFT], ids=["alt", "ctrl-shift"])
def test_alt_click_cuts_the_object_under_it_from_the_selected_instance(qtbot, solid, answer, mods):
    window, controller = solid
    fixed, _ = answer
    fixed.append([square(20, 20, 10)])
    made = select_new(window, Instance(1, [square(10, 10, 30)], provenance=Provenance.ASSISTED))
    region_click(qtbot, window, controller, 25, 25, mods)
    stack = window.editor.undo_group.activeStack()
    assert stack.count() == 1 and stack.text(0) == "Remove region"
    after = window.store.instance(made.id)
    assert [len(p.holes) for p in after.polygons] == [1]  # the cut is a hole, kept
    assert pixels(after).sum() == 30 * 30 - 10 * 10
    assert after.provenance == Provenance.EDITED
    window.undo_action.trigger()
    assert window.store.instance(made.id).polygons == made.polygons


def test_a_removal_that_would_leave_nothing_changes_nothing(qtbot, solid, answer):
    window, controller = solid
    fixed, _ = answer
    fixed.append([square(5, 5, 30)])
    made = select_new(window, Instance(1, [square(10, 10, 20)]))
    region_click(qtbot, window, controller, 20, 20, ALT)
    assert "nothing of the instance would be left" in window.statusBar().currentMessage()
    assert window.store.instance(made.id).polygons == made.polygons
    assert window.editor.undo_group.activeStack().count() == 0


def test_a_region_for_an_instance_changed_meanwhile_is_dropped(qtbot, solid, answer):
    window, controller = solid
    fixed, _ = answer
    fixed.append([square(30, 30, 10)])
    made = select_new(window, Instance(1, [square(10, 10, 24)]))
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        click(window.canvas, 35, 35, SHIFT)
        window.editor.edit_geometry(made.id, [square(12, 12, 20)], None, "Move vertex")
    QApplication.processEvents()
    assert "changed meanwhile" in window.statusBar().currentMessage()
    assert window.store.instance(made.id).polygons == [square(12, 12, 20)]
    assert window.editor.undo_group.activeStack().count() == 1  # the edit only


def test_a_region_for_an_image_left_behind_is_dropped(qtbot, solid, answer):
    window, controller = solid
    fixed, _ = answer
    fixed.append([square(30, 30, 10)])
    made = select_new(window, Instance(1, [square(10, 10, 24)]))
    with qtbot.waitSignal(controller.assist_ready, timeout=20000) as answered:
        click(window.canvas, 35, 35, SHIFT)
        window.next_image()  # before the answer reaches the GUI thread
    QApplication.processEvents()
    assert answered.args[0].instance is not None  # the model did answer ...
    assert window.store.instance(made.id).polygons == made.polygons  # ... and it was dropped
    assert window.store.instances(window.current_image_id()) == []


def test_without_a_selection_shift_click_is_a_plain_click(qtbot, solid, answer):
    window, controller = solid
    fixed, _ = answer
    fixed.append([square(30, 30, 10)])
    window.tool_actions["box"].trigger()
    region_click(qtbot, window, controller, 35, 35, SHIFT)
    (inst,) = window.store.instances(window.current_image_id())
    assert inst.polygons == [square(30, 30, 10)] and inst.provenance == Provenance.ASSISTED
    assert window.editor.undo_group.activeStack().text(0) == "Click to instance"


def test_with_two_selected_a_region_click_asks_for_one(solid):
    window, _ = solid
    image = window.current_image_id()
    a, b = window.store.apply_edit(
        image, add=[Instance(1, [square(4, 4, 8)]), Instance(1, [square(30, 30, 8)])]
    )
    window.editor.reload_current()
    window.canvas.set_selection([a.id, b.id])
    window.tool_actions["box"].trigger()
    click(window.canvas, 50, 50, ALT)
    assert "Remove region: select one instance first" in window.statusBar().currentMessage()


def test_a_region_from_a_model_since_replaced_is_dropped(qtbot, solid, monkeypatch):
    window, controller = solid
    made = select_new(window, Instance(1, [square(8, 8, 14)]))
    # The model is replaced while this answer is being made.
    started, release = held_clicks(monkeypatch)
    got = test_assist_ui.answers(controller)
    click(window.canvas, 45, 45, SHIFT)
    qtbot.waitUntil(started.is_set, timeout=20000)
    choice = controller.choice
    controller.set_model(ModelChoice(choice.model_id, choice.device))  # a new generation
    release.set()
    qtbot.waitUntil(lambda: len(got) == 1, timeout=20000)
    QApplication.processEvents()
    assert got[0].instance is not None and got[0].request.generation != controller.generation
    assert window.store.instance(made.id).polygons == made.polygons
    assert window.editor.undo_group.activeStack().count() == 0


def test_f1_help_names_the_region_clicks():
    assert "Shift+click adds the clicked object's region" in HELP_TEXT
    assert "Alt+click (or Ctrl+Shift+click) removes it" in HELP_TEXT


def test_shift_click_on_another_instance_joins_it_without_asking_the_model(qtbot, solid, answer):
    window, controller = solid
    fixed, calls = answer
    image = window.current_image_id()
    (neighbour,) = window.store.apply_edit(
        image, add=[Instance(1, [square(20, 8, 12)], score=0.9, source=Source.MODEL)]
    )
    made = select_new(window, Instance(1, [square(8, 8, 14)]))
    click(window.canvas, 28, 12, SHIFT)
    QApplication.processEvents()
    assert calls == []  # the region was the instance under the click
    stack = window.editor.undo_group.activeStack()
    assert stack.count() == 1 and stack.text(0) == "Add region"
    (after,) = window.store.instances(image)
    assert after.id == made.id and window.canvas.selection() == [made.id]
    assert pixels(after).sum() == pixels(made).sum() + pixels(neighbour).sum() - 2 * 12
    assert "joined it" in window.statusBar().currentMessage()
    window.undo_action.trigger()
    assert {i.id for i in window.store.instances(image)} == {made.id, neighbour.id}
    assert window.store.instance(made.id).polygons == made.polygons


def test_alt_click_on_an_overlapping_instance_cuts_its_outline_and_keeps_it(qtbot, solid, answer):
    window, controller = solid
    fixed, calls = answer
    image = window.current_image_id()
    (neighbour,) = window.store.apply_edit(image, add=[Instance(1, [square(30, 10, 20)])])
    made = select_new(window, Instance(1, [square(10, 10, 30)]))
    click(window.canvas, 45, 20, ALT)  # inside the neighbour only, where the model is not asked
    QApplication.processEvents()
    assert calls == []
    after = window.store.instance(made.id)
    assert pixels(after).sum() == 30 * 30 - 10 * 20
    assert window.store.instance(neighbour.id).polygons == neighbour.polygons
    assert window.editor.undo_group.activeStack().text(0) == "Remove region"


def test_a_proposal_hidden_below_the_threshold_is_not_the_region(qtbot, solid, answer):
    window, controller = solid
    fixed, calls = answer
    fixed.append([square(40, 40, 10)])
    image = window.current_image_id()
    window.store.apply_edit(
        image, add=[Instance(1, [square(38, 38, 14)], score=0.1, source=Source.MODEL)]
    )
    made = select_new(window, Instance(1, [square(8, 8, 14)]))
    region_click(qtbot, window, controller, 45, 45, SHIFT)
    assert len(calls) == 1  # the hidden proposal was not used: the model was asked
    assert len(window.store.instance(made.id).polygons) == 2


def test_the_canvas_marks_an_assist_until_its_answer_comes(qtbot, solid, monkeypatch):
    window, controller = solid
    started, release = held_clicks(monkeypatch)
    made = select_new(window, Instance(1, [square(8, 8, 14)]))
    marks = window.canvas.assist_marks
    click(window.canvas, 35, 35, SHIFT)
    qtbot.waitUntil(started.is_set, timeout=20000)
    assert len(marks) == 1  # the click is shown while the model works
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        release.set()
    QApplication.processEvents()
    assert len(marks) == 0
    assert len(window.store.instance(made.id).polygons) == 2


def test_an_assists_mark_goes_with_the_model_or_the_image(qtbot, solid, monkeypatch):
    window, controller = solid
    started, release = held_clicks(monkeypatch)
    marks = window.canvas.assist_marks
    window.tool_actions["box"].trigger()
    click(window.canvas, 35, 35)
    qtbot.waitUntil(started.is_set, timeout=20000)
    click(window.canvas, 10, 10)  # queued behind the first
    assert len(marks) == 2
    choice = controller.choice
    controller.set_model(ModelChoice(choice.model_id, choice.device))  # no answers come now
    assert len(marks) == 0
    click(window.canvas, 20, 20)
    assert len(marks) == 1
    window.next_image()
    assert len(marks) == 0
    release.set()
