"""File menu: new / open / recent projects, add images, import and export through the core
functions the CLI uses, run off the GUI thread, with clear errors; and switching projects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QDialogButtonBox

from app.core.store import ProjectStore
from app.core.types import ImageStatus
from app.ui import app as gui_app
from app.ui.file_menu import FileMenu
from app.ui.interchange_dialogs import (
    ExportChoice,
    ExportDialog,
    ImportChoice,
    ImportDialog,
    Kind,
    NewProjectChoice,
    NewProjectDialog,
)
from app.ui.main_window import MainWindow
from app.ui.preferences import settings
from app.ui.welcome import remember_project


@pytest.fixture
def window(qtbot, project):
    store = ProjectStore.open(project)
    win = MainWindow(store)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()
    store.close()


def menu_texts(menu) -> list[str]:
    return [a.text() for a in menu.actions() if a.text()]


def test_file_menu_offers_projects_import_and_export(window):
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    texts = menu_texts(file_menu)
    for wanted in (
        "New project\u2026",
        "Open project\u2026",
        "Recent projects",
        "Add images / rescan folder\u2026",
        "Import",
        "Export",
        "Checkpoint",
        "Quit",
    ):
        assert wanted in texts
    submenus = {a.text(): a.menu() for a in file_menu.actions() if a.menu() is not None}
    assert menu_texts(submenus["Import"]) == [
        "COCO JSON\u2026",
        "label maps\u2026",
        "labelme\u2026",
        "YOLO segmentation\u2026",
        "ImageJ / Fiji ROI sets\u2026",
    ]
    assert menu_texts(submenus["Export"]) == [
        "COCO JSON\u2026",
        "label maps\u2026",
        "YOLO segmentation\u2026",
        "ImageJ / Fiji ROI sets\u2026",
    ]


def write_pngs(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((32, 40), 128, np.uint8)).save(folder / name)


def test_new_project_creates_the_folder_and_asks_to_open_it(qtbot, window, tmp_path):
    images = tmp_path / "imgs"
    write_pngs(images, ["x.png", "y.png"])
    target = tmp_path / "not" / "yet" / "there"
    menu: FileMenu = window.file_menu
    with qtbot.waitSignal(menu.project_requested) as requested:
        report = menu.create(NewProjectChoice(images, target))
    assert requested.args[0] == target and report is not None and report.added == 2
    assert "2 images added" in requested.args[1]  # shown by the window that opens it
    with ProjectStore.open(target) as created:
        assert len(created.images()) == 2 and [c.name for c in created.categories()] == ["object"]
    assert "2 images added" in menu.last_message


def test_new_project_form_needs_an_existing_images_folder(qtbot, tmp_path):
    form = NewProjectDialog()
    qtbot.addWidget(form)
    ok = form.buttons.button(QDialogButtonBox.StandardButton.Ok)
    form.images.setText(str(tmp_path / "missing"))
    form.project.setText(str(tmp_path / "new"))
    assert not ok.isEnabled()
    form.images.setText(str(tmp_path))
    assert ok.isEnabled() and form.choice() == NewProjectChoice(tmp_path, tmp_path / "new")


def test_open_refuses_a_folder_without_a_project(qtbot, window, tmp_path):
    menu = window.file_menu
    with qtbot.assertNotEmitted(menu.project_requested):
        assert not menu.open(tmp_path)
    assert "holds no MaskLoop project" in menu.last_message
    other = tmp_path / "other"
    ProjectStore.create(other).close()
    with qtbot.waitSignal(menu.project_requested) as requested:
        assert menu.open(other)
    assert requested.args == [other, ""]


def test_recent_projects_list_the_others(window, tmp_path):
    other = tmp_path / "recent-one"
    ProjectStore.create(other).close()
    remember_project(settings(), other)
    remember_project(settings(), window.store.root)
    window.file_menu._fill_recent()
    texts = menu_texts(window.file_menu.recent_menu)
    assert any(str(other) in t for t in texts)
    assert not any(t.endswith(str(window.store.root)) for t in texts)


def test_add_images_rescans_and_shows_the_new_ones(window, project):
    write_pngs(project / "more", ["c.png"])
    before = len(window.images.ids())
    report = window.file_menu.rescan(project)
    assert report is not None and report.added == 1
    assert len(window.images.ids()) == before + 1
    assert "1 images added" in window.file_menu.last_message


def test_export_then_import_coco_round_trip(window, project, tmp_path):
    win, menu = window, window.file_menu
    win.threshold.setValue(0)
    win.editor.mark_done()  # image 1: both proposals accepted
    out = tmp_path / "out.json"
    text = menu.run_export(ExportChoice(Kind.COCO, out))
    assert text is not None and text.startswith(f"Wrote {out}") and "2 instances" in text
    data = json.loads(out.read_text())
    assert len(data["annotations"]) == 2
    # Writing again without "Replace existing files" is refused with the core's message.
    assert menu.run_export(ExportChoice(Kind.COCO, out)) is None
    assert "already exists" in menu.last_message
    assert menu.run_export(ExportChoice(Kind.COCO, out, overwrite=True)) is not None

    # Import into a fresh project opened in the window's place.
    fresh = tmp_path / "fresh"
    ProjectStore.create(fresh).close()
    with ProjectStore.open(fresh) as store:
        other = MainWindow(store)
        report = other.file_menu.run_import(ImportChoice(Kind.COCO, out, images_root=project))
        assert report is not None and report.instances == 2
        assert len(other.images.ids()) == 1  # the images list was refreshed
        assert "2 instances imported" in other.file_menu.last_message
        assert store.count_images(ImageStatus.DONE) == 1
        other.close()


def test_a_malformed_coco_file_is_refused_and_changes_nothing(window, project, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": "nope"}))
    before = [(i.id, len(window.store.instances(i.id))) for i in window.store.images()]
    assert window.file_menu.run_import(ImportChoice(Kind.COCO, bad, images_root=project)) is None
    assert window.file_menu.last_message  # the core's message, shown as an error
    assert [(i.id, len(window.store.instances(i.id))) for i in window.store.images()] == before


def test_label_maps_export_and_import(window, tmp_path):
    win, menu = window, window.file_menu
    win.threshold.setValue(0)
    win.editor.mark_done()
    maps = tmp_path / "maps"
    text = menu.run_export(ExportChoice(Kind.LABEL_MAPS, maps))
    assert text is not None and "1 label maps (2 instances)" in text
    cell = win.store.categories()[0].id
    report = menu.run_import(ImportChoice(Kind.LABEL_MAPS, maps, replace=True, category_id=cell))
    assert report is not None and report.instances == 2
    assert len(win.editor.doc.instances) == 2  # the shown image was re-read


@pytest.mark.parametrize("kind", [Kind.YOLO, Kind.ROIS])
def test_yolo_and_roi_sets_export_and_import(window, tmp_path, kind):
    """The Export/Import menu entries run the same core functions as export-yolo/-rois."""
    win, menu = window, window.file_menu
    win.threshold.setValue(0)
    win.editor.mark_done()
    out = tmp_path / "out"
    text = menu.run_export(ExportChoice(kind, out))
    assert text is not None and text.startswith("Wrote") and "2 instances" in text
    report = menu.run_import(ImportChoice(kind, out, replace=True))
    assert report is not None and report.instances == 2, menu.last_message
    assert len(win.editor.doc.instances) == 2
    assert menu.run_export(ExportChoice(kind, out)) is None  # existing files need Replace
    assert menu.last_message


def test_import_and_export_forms_collect_choices(qtbot, project, tmp_path):
    coco = tmp_path / "in.json"
    coco.write_text("{}")
    form = ImportDialog(Kind.COCO, [])
    qtbot.addWidget(form)
    ok = form.buttons.button(QDialogButtonBox.StandardButton.Ok)
    form.source.setText(str(coco))
    assert not ok.isEnabled()  # the images folder is still missing
    form.images_root.setText(str(project))
    form.status.setCurrentIndex(1)
    assert ok.isEnabled()
    assert form.choice() == ImportChoice(
        Kind.COCO, coco, images_root=project, status=ImageStatus.PROPOSED
    )
    export = ExportDialog(Kind.COCO)
    qtbot.addWidget(export)
    export.target.setText(str(tmp_path / "x.json"))
    export.status_boxes[ImageStatus.PROPOSED].setChecked(True)
    assert set(export.choice().statuses) == {ImageStatus.PROPOSED, ImageStatus.DONE}


def test_switching_project_replaces_the_window(qtbot, project, tmp_path, monkeypatch):
    monkeypatch.setattr(gui_app, "attach_proposals", lambda window, store: None)
    other = tmp_path / "other"
    ProjectStore.create(other).close()
    session = gui_app.Session()
    first = session.show(ProjectStore.open(project))
    qtbot.addWidget(first)
    first.project_requested.emit(other, "scan: 3 images added")
    second = session.window
    qtbot.addWidget(second)
    assert second is not first and second.store.root == other.resolve()
    assert second.file_menu.last_message == "scan: 3 images added"
    assert second.file_menu._box.parent() is second
    assert not first.isVisible() and second.isVisible()
    assert settings().value("project/last") == str(second.store.root)
    session.window.close()
    session.close()


def test_welcome_creates_a_project_in_a_new_folder(qtbot, tmp_path):
    from app.ui.welcome import create_from_folder

    images = tmp_path / "imgs"
    write_pngs(images, ["x.png"])
    with create_from_folder(images, tmp_path / "new" / "proj") as store:
        assert len(store.images()) == 1 and store.categories()
