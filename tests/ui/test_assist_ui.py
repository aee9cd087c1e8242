"""Assists in the window: Box to mask (Q), click to instance, Refine (W).

The real worker path with the tiny random-weight model (tests/conftest.py): with its mask
logits biased up every mask is its whole box, so a box's answer is that box and a refine's
answer is the instance's box grown 1.1x; biased down, every mask is empty (no object).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from canvas_helpers import _send, click, open_main_window, square, view_point
from canvas_helpers import drag as drag_path
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication

from app.core.geometry import polygons_bbox
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Provenance, Source
from app.ml.models import PROMPT_BOX_MARGIN
from app.ui.panels.model_panel import ModelEntry
from app.ui.workers import (
    ASSIST_BOX,
    AssistRequest,
    ModelChoice,
    ProposalController,
    zoo_predictor_factory,
)

SIZE = 64


def noise_project(root, *, seed: int, categories: list[str], started: bool):
    """A project of two 64x64 blurred-noise images; ``started``: a person has begun both."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(2):
        noise = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "img" / f"{i}.png"), cv2.GaussianBlur(noise, (5, 5), 0))
    with ProjectStore.open(root, create=True) as s:
        s.add_images([NewImage(f"img/{i}.png", SIZE, SIZE) for i in range(2)])
        for name in categories:
            s.add_category(name)
        if started:
            for image_id in (1, 2):
                s.apply_edit(image_id, status=ImageStatus.IN_PROGRESS)
    return root


@pytest.fixture
def project(tmp_path):
    """Two images a person has started (so no proposal run competes with assists)."""
    return noise_project(tmp_path / "p", seed=0, categories=["cell", "debris"], started=True)


def open_window(qtbot, project, install_tiny_card, mask_bias):
    model = install_tiny_card(mask_bias=mask_bias)
    window = open_main_window(qtbot, project, size=(800, 700))
    controller = ProposalController(project, choice=ModelChoice(model, "cpu"))
    window.attach_proposals(controller, [ModelEntry(model, "tiny")])
    window.canvas.fit()
    return window, controller


@pytest.fixture
def solid(qtbot, project, install_tiny_card):
    window, controller = open_window(qtbot, project, install_tiny_card, 8.0)
    yield window, controller
    window.close()
    window.store.close()


def drag(view, x0, y0, x1, y1, mods=Qt.KeyboardModifier.NoModifier) -> None:
    vp = view.viewport()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    _send(vp, QEvent.Type.MouseButtonPress, view_point(view, x0, y0), left, left, mods)
    for t in (0.3, 0.7, 1.0):
        p = view_point(view, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
        _send(vp, QEvent.Type.MouseMove, p, none, left, mods)
    _send(vp, QEvent.Type.MouseButtonRelease, view_point(view, x1, y1), left, none, mods)


def prompted(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The box the mask head is asked about: the given one widened by the prompt margin,
    inside the image (the solid test mask fills it)."""
    m, w, h = PROMPT_BOX_MARGIN, x1 - x0, y1 - y0
    return np.clip([x0 - m * w, y0 - m * h, x1 + m * w, y1 + m * h], 0, SIZE)


def bbox(instance: Instance) -> np.ndarray:
    return np.asarray(polygons_bbox(instance.polygons), np.float64)


def test_tool_keys_are_q_and_w_and_clash_with_no_other_shortcut(solid) -> None:
    window, _ = solid
    assert window.tool_actions["box"].shortcut() == QKeySequence("Q")
    assert window.refine_action.shortcut() == QKeySequence("W")
    keys = [k.toString() for a in window.actions() for k in a.shortcuts()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    window.tool_actions["box"].trigger()
    assert window.canvas.tool.name == "box" and window.tool_actions["box"].isChecked()


def test_a_dragged_box_becomes_one_undoable_instance_of_the_drawing_category(qtbot, solid):
    window, controller = solid
    window.editor.set_category_of_selected(2)  # nothing selected: new shapes are debris
    window.tool_actions["box"].trigger()
    stack = window.editor.undo_group.activeStack()
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        drag(window.canvas, 10, 12, 40, 44)
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 1, timeout=5000)
    (inst,) = window.store.instances(window.current_image_id())
    assert inst.category_id == 2 and inst.source == Source.HUMAN
    # The solid mask is the widened box; view coordinates round to whole screen pixels.
    x, y, w, h = bbox(inst)
    assert np.allclose([x, y, x + w, y + h], prompted(10, 12, 40, 44), atol=2.0)
    assert window.canvas.selection() == [inst.id]  # shown and editable at once
    assert stack.count() == 1 and stack.text(0) == "Box to mask"
    assert "Box to mask: done" in window.statusBar().currentMessage()
    window.undo_action.trigger()
    assert window.store.instances(window.current_image_id()) == []
    window.redo_action.trigger()
    assert len(window.store.instances(window.current_image_id())) == 1


def test_an_assists_instance_is_assisted_until_a_person_moves_a_vertex(qtbot, solid):
    window, controller = solid
    image = window.current_image_id()
    window.tool_actions["box"].trigger()
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        drag(window.canvas, 10, 12, 40, 44)
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 1, timeout=5000)
    (inst,) = window.store.instances(image)
    assert inst.provenance == Provenance.ASSISTED and inst.source == Source.HUMAN
    assert window.instances.topLevelItem(0).text(3) == "assisted"  # the Instances dock
    kinds = window.instance_filter.source
    kinds.setCurrentIndex(kinds.findData("drawn"))
    assert window.instances.shown_ids() == []
    kinds.setCurrentIndex(kinds.findData("assisted"))
    assert window.instances.shown_ids() == [inst.id]
    kinds.setCurrentIndex(0)
    window.canvas.set_tool("select")
    handle = next(h for h in window.canvas.single_editor().handles() if h.key == (0, 0, 0))
    x0, y0 = handle.pos().x(), handle.pos().y()
    drag_path(window.canvas, [(x0, y0), (x0 + 4, y0 + 3), (x0 + 6, y0 + 5)])
    assert window.editor.undo_group.activeStack().count() == 2
    assert window.store.instance(inst.id).provenance == Provenance.EDITED
    assert window.instances.topLevelItem(0).text(3) == "edited"
    window.undo_action.trigger()
    assert window.store.instance(inst.id).provenance == Provenance.ASSISTED
    window.redo_action.trigger()
    assert window.store.instance(inst.id).provenance == Provenance.EDITED
    window.versions.refresh()
    assert "0 assisted, 0 drawn by hand, 1 edited" in window.versions.provenance_label.text()


def test_the_model_status_says_assisting_while_an_assist_runs(qtbot, solid):
    window, controller = solid
    states: list[str] = []
    controller.status_changed.connect(lambda status: states.append(status.state))
    window.tool_actions["box"].trigger()
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        drag(window.canvas, 10, 10, 40, 40)
    qtbot.waitUntil(lambda: states[-1:] == ["idle"], timeout=5000)
    assert "assisting" in states and "proposing" not in states


def test_an_answer_for_an_image_left_behind_is_dropped(qtbot, solid):
    window, controller = solid
    first = window.current_image_id()
    window.tool_actions["box"].trigger()
    with qtbot.waitSignal(controller.assist_ready, timeout=20000) as answered:
        drag(window.canvas, 10, 10, 40, 40)
        window.next_image()  # before the answer reaches the GUI thread
    QApplication.processEvents()  # the window's slot was queued before waitSignal's
    assert answered.args[0].instance is not None  # the model did answer ...
    assert window.current_image_id() != first
    assert window.store.instances(first) == []  # ... and nothing was added anywhere
    assert window.store.instances(window.current_image_id()) == []
    assert window.editor.undo_group.activeStack().count() == 0


def test_refine_replaces_the_geometry_from_the_grown_box_as_one_edit(qtbot, solid):
    window, controller = solid
    image = window.current_image_id()
    (made,) = window.store.apply_edit(image, add=[Instance(1, [square(10, 10, 40)])])
    window.editor.reload_current()
    window.canvas.set_selection([made.id])
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        window.refine_action.trigger()
    qtbot.waitUntil(lambda: window.editor.undo_group.activeStack().count() == 1, timeout=5000)
    (inst,) = window.store.instances(image)
    assert inst.id == made.id and inst.category_id == 1
    x, y, w, h = bbox(inst)
    assert np.allclose([x, y, x + w, y + h], prompted(8, 8, 52, 52), atol=1.0)  # grown 1.1x
    assert window.editor.undo_group.activeStack().text(0) == "Refine"
    assert inst.provenance == Provenance.ASSISTED  # the model made the drawn one's outline
    window.undo_action.trigger()
    (back,) = window.store.instances(image)
    assert np.allclose(bbox(back), [10, 10, 40, 40])
    assert back.provenance == Provenance.DRAWN


def test_refine_needs_one_selected_instance(solid):
    window, _ = solid
    window.refine_action.trigger()
    assert "select one instance" in window.statusBar().currentMessage()


def test_a_click_without_drag_adds_the_object_under_it(qtbot, solid):
    window, controller = solid
    image = window.current_image_id()
    window.store.apply_edit(image, add=[Instance(1, [square(4, 4, 16)])])
    window.editor.reload_current()
    window.tool_actions["box"].trigger()
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        click(window.canvas, 45, 45)
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 2, timeout=5000)
    new = max(window.store.instances(image), key=lambda i: i.id)
    x, y, w, h = bbox(new)
    assert x <= 45 <= x + w and y <= 45 <= y + h  # the object under the click
    assert new.provenance == Provenance.ASSISTED
    stack = window.editor.undo_group.activeStack()
    assert stack.count() == 1 and stack.text(0) == "Click to instance"


def test_no_object_found_is_said_in_the_status_bar(qtbot, project, install_tiny_card):
    window, controller = open_window(qtbot, project, install_tiny_card, -20.0)
    try:
        window.tool_actions["box"].trigger()
        with qtbot.waitSignal(controller.assist_ready, timeout=20000):
            drag(window.canvas, 10, 10, 40, 40)
        QApplication.processEvents()  # the window's slot was queued before waitSignal's
        assert "finds no object" in window.statusBar().currentMessage()
        assert window.store.instances(window.current_image_id()) == []
    finally:
        window.close()
        window.store.close()


def answers(controller) -> list:
    """Every assist answer, as the worker emits it."""
    got: list = []
    controller.assist_ready.connect(got.append)
    return got


def test_two_quick_boxes_are_two_instances_and_two_undo_steps(qtbot, solid):
    window, controller = solid
    got = answers(controller)
    window.tool_actions["box"].trigger()
    drag(window.canvas, 4, 4, 24, 24)
    drag(window.canvas, 36, 36, 60, 60)  # before the first answer is back
    qtbot.waitUntil(lambda: len(got) == 2, timeout=20000)
    QApplication.processEvents()  # the window's slot was queued before the test's
    boxes = sorted(
        tuple(bbox(i).round()) for i in window.store.instances(window.current_image_id())
    )
    corners = [
        tuple(prompted(4, 4, 24, 24)[:2].round()),
        tuple(prompted(36, 36, 60, 60)[:2].round()),
    ]
    assert len(boxes) == 2 and [b[:2] for b in boxes] == corners
    assert window.editor.undo_group.activeStack().count() == 2


def test_an_answer_from_a_model_since_replaced_is_dropped(qtbot, solid):
    window, controller = solid
    got = answers(controller)
    window.tool_actions["box"].trigger()
    drag(window.canvas, 4, 4, 24, 24)
    choice = controller.choice
    controller.set_model(ModelChoice(choice.model_id, choice.device))  # a new generation
    drag(window.canvas, 36, 36, 60, 60)
    qtbot.waitUntil(
        lambda: any(r.request.generation == controller.generation for r in got), timeout=20000
    )
    QApplication.processEvents()
    (inst,) = window.store.instances(window.current_image_id())  # only the second box
    assert tuple(bbox(inst).round())[:2] == tuple(prompted(36, 36, 60, 60)[:2].round())


def test_a_refine_of_an_instance_edited_meanwhile_replaces_nothing(qtbot, solid):
    window, controller = solid
    image = window.current_image_id()
    (made,) = window.store.apply_edit(image, add=[Instance(1, [square(10, 10, 40)])])
    window.editor.reload_current()
    window.canvas.set_selection([made.id])
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        window.refine_action.trigger()
        window.editor.edit_geometry(made.id, [square(12, 12, 30)], None, "Move vertex")
    QApplication.processEvents()
    assert "changed meanwhile" in window.statusBar().currentMessage()
    (inst,) = window.store.instances(image)
    assert np.allclose(bbox(inst), [12, 12, 30, 30])
    assert window.editor.undo_group.activeStack().count() == 1  # the edit only


def test_a_box_dragged_with_shift_is_the_selected_instances_new_outline(qtbot, solid):
    window, controller = solid
    image = window.current_image_id()
    (made,) = window.store.apply_edit(image, add=[Instance(2, [square(10, 10, 12)])])
    window.editor.reload_current()
    window.canvas.set_selection([made.id])
    window.tool_actions["box"].trigger()
    with qtbot.waitSignal(controller.assist_ready, timeout=20000):
        drag(window.canvas, 8, 8, 40, 40, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.editor.undo_group.activeStack().count() == 1, timeout=5000)
    (inst,) = window.store.instances(image)
    assert inst.id == made.id and inst.category_id == 2
    x, y, w, h = bbox(inst)
    assert np.allclose([x, y, x + w, y + h], prompted(8, 8, 40, 40), atol=2.0)
    assert window.editor.undo_group.activeStack().text(0) == "Refine from box"
    assert inst.provenance == Provenance.ASSISTED
    window.canvas.set_selection([])
    drag(window.canvas, 30, 30, 50, 50, Qt.KeyboardModifier.ShiftModifier)
    assert "select one instance" in window.statusBar().currentMessage()


def test_without_a_model_the_assists_say_so(qtbot, project):
    window = open_main_window(qtbot, project)  # no proposal worker attached
    try:
        window.tool_actions["box"].trigger()
        drag(window.canvas, 10, 10, 40, 40)
        assert "need a model" in window.statusBar().currentMessage()
        assert window.store.instances(window.current_image_id()) == []
    finally:
        window.close()
        window.store.close()


def test_an_assist_is_served_ahead_of_queued_proposals(qtbot, tmp_path, install_tiny_card):
    model = install_tiny_card(mask_bias=8.0)
    root = tmp_path / "q"
    (root / "img").mkdir(parents=True)
    n = 6
    for i in range(n):
        cv2.imwrite(str(root / "img" / f"{i}.png"), np.full((SIZE, SIZE), 40 * i, np.uint8))
    with ProjectStore.open(root, create=True) as s:
        s.add_images([NewImage(f"img/{i}.png", SIZE, SIZE) for i in range(n)])
        s.add_category("cell")
    controller = ProposalController(root, choice=ModelChoice(model, "cpu"))
    try:
        events: list[str] = []
        controller.proposals_ready.connect(lambda _r: events.append("proposal"))
        controller.assist_ready.connect(lambda _r: events.append("assist"))
        controller.propose_all(list(range(1, n + 1)))
        pixels = cv2.imread(str(root / "img" / "3.png"))
        controller.request_assist(
            AssistRequest(ASSIST_BOX, 4, (4, "img/3.png"), pixels, box=(8.0, 8.0, 30.0, 30.0))
        )
        qtbot.waitUntil(lambda: events.count("proposal") == n, timeout=30000)
        assert events.count("assist") == 1
        assert events.index("assist") <= 1  # at most the job in flight went first
    finally:
        controller.shutdown()


def test_the_first_assist_after_the_current_images_proposals_runs_no_backbone(
    qtbot, tmp_path, install_tiny_card
):
    """The proposal pass of the image shown, and of the one proposed ahead (prefetch), keep
    their features for the assists: neither first assist runs the backbone."""
    model = install_tiny_card(mask_bias=8.0)
    root = noise_project(tmp_path / "fresh", seed=3, categories=["cell"], started=False)
    built = []

    def factory(choice, project_root):
        built.append(zoo_predictor_factory(choice, project_root))
        return built[-1]

    window = open_main_window(qtbot, root, size=(800, 700))
    controller = ProposalController(root, predictor_factory=factory, choice=ModelChoice(model))
    try:
        proposed: list[int] = []
        controller.proposals_ready.connect(lambda r: proposed.append(r.image_id))
        window.attach_proposals(controller, [ModelEntry(model, "tiny")])
        window.canvas.fit()
        current = window.current_image_id()
        qtbot.waitUntil(lambda: len(proposed) == 2, timeout=30000)  # current, then prefetch
        assert proposed[0] == current
        backbone: list[tuple[int, ...]] = []
        (predictor,) = built
        hook = predictor.model.backbone.register_forward_hook(
            lambda _m, a, _o: backbone.append(tuple(a[0].shape))
        )
        try:
            window.tool_actions["box"].trigger()
            with qtbot.waitSignal(controller.assist_ready, timeout=20000) as answered:
                drag(window.canvas, 10, 12, 40, 44)
            assert answered.args[0].instance is not None and backbone == []
            window.next_image()
            window.canvas.fit()
            with qtbot.waitSignal(controller.assist_ready, timeout=20000) as answered:
                drag(window.canvas, 10, 12, 40, 44)
            assert answered.args[0].instance is not None and backbone == []
        finally:
            hook.remove()
    finally:
        window.close()
        controller.shutdown()
        window.store.close()
