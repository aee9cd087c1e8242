"""Smaller points of the annotation workflow: the tool button keeps its highlight, the score
slider shows its value, min <= max in the display, spin boxes apply on focus loss, the
status bar forgets the last image, and the History names each geometry edit."""

from __future__ import annotations

import pytest
from canvas_helpers import drag
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from app.ui.main_window import MainWindow
from app.ui.panels.model_panel import ModelEntry, ModelPanel
from app.ui.workers import ModelChoice, WorkerStatus


def test_pressing_the_tool_key_again_keeps_the_tool_highlighted(window):
    QTest.keyClick(window.canvas, Qt.Key.Key_P)
    QTest.keyClick(window.canvas, Qt.Key.Key_P)
    assert window.canvas.tool.name == "polygon"
    assert window.tool_actions["polygon"].isChecked()
    assert not window.tool_actions["select"].isChecked()


def test_the_score_slider_shows_its_value(window):
    window.threshold.setValue(73)
    assert window.threshold_label.text() == "0.73"


def test_manual_min_stays_below_max(window):
    d = window.display
    d.auto.setChecked(False)
    d.low.setValue(100)
    d.high.setValue(500)
    d.low.setValue(900)  # above max: moved back inside
    assert d.low.value() < d.high.value() == 500
    d.high.setValue(50)  # below min: moved back inside
    assert d.high.value() > d.low.value()
    assert window.editor.display.low < window.editor.display.high


def test_a_typed_value_applies_when_the_focus_leaves(window, qtbot):
    spin = window.display.gamma
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    spin.selectAll()
    QTest.keyClicks(spin, "0.5")
    assert window.editor.display.gamma == pytest.approx(1.0)  # not yet: still typing
    QTest.keyClick(spin, Qt.Key.Key_Tab)
    assert window.editor.display.gamma == pytest.approx(0.5)


def test_the_status_bar_forgets_the_last_image(window):
    window.canvas.cursor_moved.emit(10.0, 10.0)
    assert window.cursor_label.text()
    window.next_image()
    assert window.cursor_label.text() == ""


def test_history_names_each_geometry_edit(window):
    win, canvas = window, window.canvas
    (first, _) = win.editor.doc.instances
    canvas.set_selection([first])
    handle = next(h for h in canvas.single_editor().handles() if h.key == (0, 0, 0))
    x, y = handle.pos().x(), handle.pos().y()
    drag(canvas, [(x, y), (x - 4, y - 4)])
    canvas.set_tool("brush")
    canvas.set_brush_radius(3)
    drag(canvas, [(30, 30), (40, 30)])
    canvas.set_tool("eraser")
    drag(canvas, [(30, 30), (31, 30)])
    stack = win.editor.undo_group.activeStack()
    labels = [stack.text(i) for i in range(stack.count())]
    assert labels == ["Move vertex", "Brush", "Erase"]


def test_instances_are_numbered_sortable_and_zoomable(window):
    panel, canvas = window.instances, window.canvas
    assert [panel.topLevelItem(r).text(0) for r in range(panel.topLevelItemCount())] == ["1", "2"]
    panel.sortByColumn(2, Qt.SortOrder.AscendingOrder)  # by score, as numbers
    scores = [panel.topLevelItem(r).text(2) for r in range(panel.topLevelItemCount())]
    assert scores == ["0.30", "0.90"]
    low = panel.topLevelItem(0)
    before = canvas.zoom()
    panel.itemDoubleClicked.emit(low, 0)
    target = low.data(0, Qt.ItemDataRole.UserRole)
    assert canvas.selection() == [target] and canvas.zoom() > 2 * before
    assert not canvas.is_fitted()


def test_score_labels_can_be_hidden(window):
    assert window.canvas.score_labels_visible()
    QTest.keyClick(window.canvas, Qt.Key.Key_L)
    assert not window.canvas.score_labels_visible() and not window.labels_action.isChecked()


def test_reopening_a_project_restores_image_threshold_and_display(window, qtbot):
    store = window.store
    window.next_image()
    window.threshold.setValue(81)
    window.display.gamma.setValue(0.6)
    window.close()  # saves the project's view state
    again = MainWindow(store)
    qtbot.addWidget(again)
    assert again.current_image_id() == 2
    assert again.threshold.value() == 81 and again.editor.threshold == pytest.approx(0.81)
    assert again.display.gamma.value() == pytest.approx(0.6)
    assert again.editor.display.gamma == pytest.approx(0.6)
    again.close()


def test_the_last_image_is_remembered_even_if_the_window_never_closes(window, qtbot):
    """A killed or crashed session reopens on the image the person was on."""
    store = window.store
    window.next_image()
    window.next_image()
    shown = window.current_image_id()
    again = MainWindow(store)  # the first window was never closed
    qtbot.addWidget(again)
    assert again.current_image_id() == shown != 1
    again.close()


def test_instances_filter_by_category_source_and_score(window):
    win, bar, panel = window, window.instance_filter, window.instances
    win.threshold.setValue(0)  # the floor: both proposals shown
    doc = win.editor.doc
    high, low = sorted(doc.instances, key=lambda i: -doc.instances[i].score)
    win.editor.canvas.set_selection([high])
    win.editor.accept_selected()
    bar.source.setCurrentIndex(bar.source.findData("pending"))
    assert panel.shown_ids() == [low]
    bar.source.setCurrentIndex(bar.source.findData("accepted"))
    assert panel.shown_ids() == [high]
    bar.source.setCurrentIndex(0)
    bar.min_score.setValue(0.5)
    assert panel.shown_ids() == [high]
    bar.min_score.setValue(0.0)
    debris = win.store.categories()[1].id
    bar.category.setCurrentIndex(bar.category.findData(debris))
    assert panel.shown_ids() == []
    bar.category.setCurrentIndex(0)
    assert sorted(panel.shown_ids()) == sorted([high, low])


def test_the_image_summary_steps_aside_while_a_message_is_shown(window):
    summary = window.status_label
    assert summary.isVisible() and summary.text()
    window.statusBar().showMessage("Add region: the instance under the click joined it.")
    assert not summary.isVisible()
    window.statusBar().clearMessage()
    assert summary.isVisible()


def test_the_model_panel_status_reads_as_one_sentence(qtbot):
    panel = ModelPanel(
        [ModelEntry("cells", "Nuclei (fluorescence and brightfield), light CPU model")],
        ModelChoice("cells", "cpu"),
        cuda_available=False,
    )
    qtbot.addWidget(panel)
    panel.show_status(WorkerStatus("cells", "cpu", 0, False, 1.03))
    assert "idle, 0 queued, last image 1.03 s" in panel.info.text()
