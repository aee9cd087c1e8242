"""The model versions dock: listing, the active mark, Make active, compare, and the
correction analytics of a scripted review."""

from __future__ import annotations

from pathlib import Path

import pytest
from canvas_helpers import square
from PySide6.QtCore import Qt

from app.core.store import NewImage, ProjectStore
from app.core.types import Category, ImageStatus, Instance, Source
from app.ml.versions import ACTIVE_MODEL_KEY, active_model, set_active_model
from app.ui.panels.versions_panel import OUTCOME_COLUMNS, VersionsPanel


@pytest.fixture
def store(tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    with ProjectStore.open(root, create=True) as s:
        cat = s.add_category("cell")
        cats = [Category(cat.id, cat.name)]
        s.add_model_version(
            "cells-mobile",
            "models/v1.pt",
            categories=cats,
            metrics={"segm_AP": 0.412, "segm_AP50": 0.801, "val_images": 3.0},
            images_used=10,
            name="first",
        )
        s.add_model_version(
            "cells-mobile",
            "models/v2.pt",
            parent_id=1,
            categories=cats,
            metrics={"segm_AP": 0.503, "segm_AP50": 0.852, "val_images": 4.0},
            images_used=20,
        )
        set_active_model(s, "v1")
        yield s


def cell_texts(table, row: int) -> list[str]:
    return [table.item(row, c).text() for c in range(table.columnCount())]


def row_of(panel: VersionsPanel, version: int) -> int:
    for row in range(panel.table.rowCount()):
        if panel.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == version:
            return row
    raise AssertionError(f"v{version} not listed")


def test_lists_versions_and_marks_the_active_one(qtbot, store: ProjectStore) -> None:
    panel = VersionsPanel(store)
    qtbot.addWidget(panel)
    assert panel.table.rowCount() == 2
    newest = cell_texts(panel.table, 0)
    assert newest[:7] == ["v2", "", "cells-mobile", "v1", "20", "0.503", "0.852"]
    first = cell_texts(panel.table, row_of(panel, 1))
    assert first[0] == "v1 (active)" and first[1] == "first" and first[3] == "\u2013"
    assert panel.table.item(row_of(panel, 1), 0).font().bold()
    assert not panel.table.item(row_of(panel, 2), 0).font().bold()
    assert "v1" in panel.active_label.text()


def test_make_active_emits_and_updates_the_store(qtbot, store: ProjectStore) -> None:
    panel = VersionsPanel(store)
    qtbot.addWidget(panel)
    panel.select_versions([1, 2])
    assert not panel.make_active.isEnabled()  # two selected: compare, not activate
    panel.select_versions([2])
    assert panel.make_active.isEnabled()
    with qtbot.waitSignal(panel.activated, timeout=2000) as signal:
        qtbot.mouseClick(panel.make_active, Qt.MouseButton.LeftButton)
    assert signal.args == ["v2"]
    assert store.get_meta(ACTIVE_MODEL_KEY) == "v2" and active_model(store) == "v2"
    assert cell_texts(panel.table, row_of(panel, 2))[0] == "v2 (active)"
    assert cell_texts(panel.table, row_of(panel, 1))[0] == "v1"
    assert panel.selected_ids() == [2]  # the selection survives the refresh


def test_a_version_deleted_meanwhile_is_reported_not_activated(qtbot, store: ProjectStore) -> None:
    panel = VersionsPanel(store)
    qtbot.addWidget(panel)
    panel.select_versions([2])
    store._conn.execute("DELETE FROM model_versions WHERE id = 2")  # another program did it
    with qtbot.assertNotEmitted(panel.activated):
        panel.activate_selected()
    assert "no model version v2" in panel.message.text()
    assert active_model(store) == "v1"


def test_compare_two_versions_side_by_side(qtbot, store: ProjectStore) -> None:
    panel = VersionsPanel(store)
    qtbot.addWidget(panel)
    panel.select_versions([2, 1])
    rows = {
        panel.compare.item(r, 0).text(): cell_texts(panel.compare, r)[1:]
        for r in range(panel.compare.rowCount())
    }
    assert rows["segm AP"] == ["0.412", "0.503", "+0.091"]
    assert rows["segm AP50"] == ["0.801", "0.852", "+0.051"]
    assert rows["images used"] == ["10", "20", "+10"]
    assert panel.compare.horizontalHeaderItem(1).text() == "v1"
    panel.select_versions([1])
    assert panel.compare.rowCount() == 0


def outcome_rows(panel: VersionsPanel) -> list[dict[str, str]]:
    """The analytics table as shown: column title -> text, a dict a row."""
    table = panel.outcomes
    return [
        {
            table.horizontalHeaderItem(c).text(): table.item(r, c).text()
            for c in range(table.columnCount())
        }
        for r in range(table.rowCount())
    ]


def proposals(n: int) -> list[Instance]:
    return [Instance(1, [square(10 + 30 * k, 10, 20)], score=0.9) for k in range(n)]


def test_analytics_match_the_store_on_a_scripted_review(qtbot, store: ProjectStore) -> None:
    ids = store.add_images([NewImage(f"{k}.png", 200, 200) for k in range(3)])
    panel = VersionsPanel(store)
    qtbot.addWidget(panel)
    assert outcome_rows(panel) == []
    # Image 1: v1 proposes 4; the reviewer keeps one, edits one, rejects one, leaves one,
    # draws a missed cell and marks the image done.
    store.replace_proposals(ids[0], proposals(4), model_version=1)
    a, b, c, _d = store.instances(ids[0])
    b.polygons = [square(40, 40, 25)]
    b.source = Source.MODEL_EDITED
    store.apply_edit(ids[0], update=[b])
    store.apply_edit(ids[0], delete=[c.id])
    store.apply_edit(ids[0], add=[Instance(1, [square(150, 150, 20)])], status=ImageStatus.DONE)
    # Image 2: v2 proposes 2, not reviewed yet. Image 3: the zoo model proposes 1, rejected.
    store.replace_proposals(ids[1], proposals(2), model_version=2)
    store.replace_proposals(ids[2], proposals(1), model_version=None)
    store.apply_edit(ids[2], delete=[store.instances(ids[2])[0].id])
    panel.refresh()
    rows = outcome_rows(panel)
    expected = [
        {
            "Proposed by": "zoo model" if o.model_version is None else f"v{o.model_version}",
            "Accepted": str(o.accepted),
            "Edited": str(o.edited),
            "Rejected": str(o.rejected),
            "Pending": str(o.pending),
            "Drawn by hand": str(o.added_by_hand),
        }
        for o in store.proposal_outcomes()
    ]
    assert [{k: r[k] for k in OUTCOME_COLUMNS[:-1]} for r in rows] == expected
    by_model = {r["Proposed by"]: r for r in rows}
    assert by_model["v1"] == {
        "Proposed by": "v1",
        "Accepted": "2",  # a and d were kept unchanged on a done image
        "Edited": "1",
        "Rejected": "1",
        "Pending": "0",
        "Drawn by hand": "1",
        "Accepted share": "50%",
    }
    assert by_model["v2"]["Pending"] == "2" and by_model["v2"]["Accepted share"] == "\u2013"
    assert by_model["zoo model"]["Rejected"] == "1"


def test_tables_show_several_rows_in_a_short_dock(qtbot, store: ProjectStore) -> None:
    panel = VersionsPanel(store)
    qtbot.addWidget(panel)
    row = panel.table.verticalHeader().defaultSectionSize()
    for table in (panel.table, panel.compare, panel.outcomes):
        assert table.minimumHeight() >= 4 * row


def test_model_menu_opens_the_versions_in_a_window_wide_enough(qtbot, project) -> None:
    from app.ui.main_window import MainWindow
    from app.ui.model_wiring import VERSIONS_MIN_WIDTH

    with ProjectStore.open(project) as s:
        win = MainWindow(s)
        qtbot.addWidget(win)
        win.resize(1000, 700)
        win.show()
        qtbot.waitExposed(win)
        dock = win.versions_dock
        dock.setFloating(False)
        dock.hide()
        win.show_versions()
        assert dock.isVisible()
        assert dock.width() >= VERSIONS_MIN_WIDTH
        assert dock.isFloating()  # the right-hand column is narrower than the tables
        # Docked where it is wide enough (the bottom area of a wide window), it stays docked.
        dock.setFloating(False)
        win.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        win.resize(1400, 900)
        qtbot.waitUntil(lambda: dock.width() >= VERSIONS_MIN_WIDTH)
        win.show_versions()
        assert dock.isVisible() and not dock.isFloating()
        win.close()
