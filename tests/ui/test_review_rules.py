"""Keyboard review rules: marking done never accepts hidden proposals, Tab / Shift+Tab cycle
through the shown ones, new categories get their own colour, and picking a category for a
selection leaves the category of new drawings alone."""

from __future__ import annotations

import pytest
from canvas_helpers import click, open_main_window, square
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QInputDialog

from app.core.store import ProjectStore
from app.core.types import ImageStatus, Instance, Source
from app.ui.panels.categories import unused_color

SCORES = (0.95, 0.8, 0.6, 0.3)  # 0.3 is hidden at the window's 0.5 threshold


@pytest.fixture
def window(qtbot, project):
    with ProjectStore.open(project) as store:
        store.replace_proposals(
            1,
            [Instance(1, [square(10 + 45 * k, 60, 30)], score=s) for k, s in enumerate(SCORES)],
            model_version=None,
        )
    win = open_main_window(qtbot, project)
    win.threshold.setValue(50)
    yield win
    win.close()
    win.store.close()


def ids_by_score(win) -> dict[float, int]:
    return {inst.score: i for i, inst in win.editor.doc.instances.items()}


def test_mark_done_accepts_shown_and_rejects_hidden_proposals(window):
    win, store = window, window.store
    by_score = ids_by_score(win)
    QTest.keyClick(win.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert store.image(1).status == ImageStatus.DONE
    kept = {i.id for i in store.instances(1)}
    assert kept == {by_score[s] for s in (0.95, 0.8, 0.6)}  # 0.3 was hidden: rejected
    assert store.accepted_ids(1) == kept
    assert "accepted 3 shown proposal(s), rejected 1 hidden" in win.statusBar().currentMessage()
    assert win.current_image_id() == 2  # the next image needing review
    win.open_image(1)
    stack = win.editor.undo_group.activeStack()
    assert stack.text(stack.count() - 1) == "Mark done, accept 3, reject 1 hidden"
    win.undo_action.trigger()  # one step brings everything back as it was
    assert store.image(1).status == ImageStatus.PROPOSED
    assert len(store.instances(1)) == 4 and store.accepted_ids(1) == set()


def test_mark_done_with_everything_shown_accepts_all(window):
    win, store = window, window.store
    win.threshold.setValue(0)
    win.done_and_next()
    assert len(store.instances(1)) == 4 and len(store.accepted_ids(1)) == 4


def test_tab_and_shift_tab_cycle_through_shown_proposals(window):
    win, canvas = window, window.canvas
    by_score = ids_by_score(win)
    shown = [by_score[s] for s in (0.95, 0.8, 0.6)]

    def tab(shift: bool = False) -> int:
        mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
        QTest.keyClick(canvas, Qt.Key.Key_Backtab if shift else Qt.Key.Key_Tab, mod)
        (selected,) = canvas.selection()
        return selected

    assert [tab(), tab(), tab(), tab()] == [*shown, shown[0]]  # wraps; 0.3 is never picked
    assert [tab(True), tab(True)] == [shown[2], shown[1]]
    # Accepting the selected one moves on to the one after it, not back to the top.
    QTest.keyClick(canvas, Qt.Key.Key_A)
    assert canvas.selection() == [shown[2]]
    QTest.keyClick(canvas, Qt.Key.Key_R)
    assert canvas.selection() == [shown[0]]
    assert win.editor.doc.pending_ids() == [shown[0], by_score[0.3]]


def test_tab_in_a_spin_box_moves_the_focus_not_the_review(window, qtbot):
    win = window
    win.display.show()
    spin = win.display.gamma
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    QTest.keyClick(spin, Qt.Key.Key_Tab)
    assert win.canvas.selection() == []
    assert not spin.hasFocus()


def test_new_categories_get_distinct_colours(window, monkeypatch):
    win, store = window, window.store
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("nucleus", True))
    win.categories.add()
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("membrane", True))
    win.categories.add()
    colors = [c.color.lower() for c in store.categories()]
    assert len(set(colors)) == len(colors) == 4
    assert unused_color(["#e6194b", "#3cb44b"]) == "#ffe119"


def test_recategorising_a_selection_keeps_the_drawing_category(window):
    win, canvas, store = window, window.canvas, window.store
    cell, debris = (c.id for c in store.categories())
    assert "cell" in win.categories.drawing_label.text()
    proposal = ids_by_score(win)[0.95]
    canvas.set_selection([proposal])
    QTest.keyClick(canvas, Qt.Key.Key_2)
    assert store.instance(proposal).category_id == debris
    assert store.instance(proposal).source == Source.MODEL_EDITED
    assert "cell" in win.categories.drawing_label.text()
    # Drawing now still makes a "cell"; with nothing selected, 2 changes what is drawn.
    canvas.set_tool("polygon")
    for x, y in [(20, 150), (60, 150), (60, 190)]:
        click(canvas, x, y)
    QTest.keyClick(canvas, Qt.Key.Key_Return)
    (drawn,) = [i for i in store.instances(1) if i.source == Source.HUMAN]
    assert drawn.category_id == cell
    QTest.keyClick(canvas, Qt.Key.Key_Escape)
    canvas.set_selection([])
    QTest.keyClick(canvas, Qt.Key.Key_2)
    assert "debris" in win.categories.drawing_label.text()
    assert win.editor.drawing_category() == debris


def test_f1_shows_the_keys_and_rules_unwrapped(window, qtbot):
    window.show_help()
    dialog = window._help
    qtbot.waitExposed(dialog)
    text = dialog.text.toPlainText()
    assert "hidden ones rejected" in text and "Tab / Shift+Tab" in text and "Ctrl+N" in text
    qtbot.waitUntil(lambda: dialog.text.horizontalScrollBar().maximum() == 0)


def test_status_bar_counts_shown_and_hidden_proposals(window):
    assert "3 to review (1 hidden below the slider)" in window.status_label.text()
    window.threshold.setValue(0)
    assert window.status_label.text().endswith("4 to review")


def test_hidden_categories_are_neither_reviewed_nor_decided_unseen(window):
    win, canvas, store = window, window.canvas, window.store
    cell = store.categories()[0].id
    layer = canvas.canvas_scene.layer
    win.categories.set_category_visible(cell, False)
    assert win.editor.hidden_categories == {cell}
    assert not any(layer.is_shown(i) for i in layer.ids())
    QTest.keyClick(canvas, Qt.Key.Key_Tab)
    assert canvas.selection() == []
    QTest.keyClick(canvas, Qt.Key.Key_A, Qt.KeyboardModifier.ShiftModifier)
    assert store.accepted_ids(1) == set()
    QTest.keyClick(canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert store.image(1).status != ImageStatus.DONE and win.current_image_id() == 1
    assert "belong to hidden categories" in win.statusBar().currentMessage()
    win.categories.set_category_visible(cell, True)
    assert sum(layer.is_shown(i) for i in layer.ids()) == 3
    win.done_and_next()
    assert store.image(1).status == ImageStatus.DONE


def test_a_refused_edit_also_opens_one_dialog(window, qtbot):
    """The store refusing an edit (locked, disk full) is said in the status bar and in a
    dialog; repeated failures (a drag) reuse the one dialog."""
    from PySide6.QtWidgets import QMessageBox

    window.editor.save_failed.emit("Not saved: database is locked. The image shows what is saved.")
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert len(boxes) == 1 and "database is locked" in boxes[0].text()
    assert "free some space" in boxes[0].text() and not boxes[0].isModal()
    window.editor.save_failed.emit("Not saved: disk full. The image shows what is saved.")
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert len(boxes) == 1 and "disk full" in boxes[0].text()


def test_an_image_another_program_rewrote_is_reloaded(window, project):
    """propose --force from the command line rewrites the shown image: the window sees it
    (polled every 2 s) and shows what is saved, without waiting for an edit to fail."""
    assert window.external_check.isActive() and window.external_check.interval() == 2000
    before = set(window.editor.doc.instances)
    assert window.editor.reload_if_changed_elsewhere() is False  # nothing changed yet
    with ProjectStore.open(project) as other:
        other.replace_proposals(1, [Instance(1, [square(5, 5, 20)], score=0.9)], model_version=None)
    assert window.editor.reload_if_changed_elsewhere() is True
    after = set(window.editor.doc.instances)
    assert after != before and len(after) == 1
    assert "This image was changed in the project" in window.statusBar().currentMessage()
    assert window.editor.reload_if_changed_elsewhere() is False
