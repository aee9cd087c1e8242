"""A locked or full project store is a one-line error with exit code 1, never a traceback."""

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main, project_cmds
from app.core import store as store_module
from app.core.store import ProjectStore


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(store_module, "LOCK_TIMEOUT_S", 0.05)
    images = tmp_path / "imgs"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((16, 16), np.uint8))
    assert main(["init", str(tmp_path / "p"), "--images", str(images)]) == 0
    return tmp_path / "p"


def _one_line_error(capsys) -> str:
    """The error line of stderr (a progress bar may have drawn there too)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "maskloop: error: " in line]
    assert len(lines) == 1 and lines[0].startswith("maskloop: error: ")
    return lines[0]


def _coco(tmp_path: Path) -> Path:
    """One annotation of 20,000 vertices: more than the free space of the store's pages."""
    ring = np.random.default_rng(0).uniform(1, 15, 40_000).round(2).tolist()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
        "categories": [{"id": 3, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [ring]}],
    }))  # fmt: skip
    return path


def test_commands_on_a_locked_project(project, tmp_path, capsys):
    capsys.readouterr()
    other = sqlite3.connect(project / "maskloop.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        coco = ["import-coco", str(project), str(_coco(tmp_path))]
        assert main([*coco, "--images-root", str(tmp_path / "imgs")]) == 1
        assert "busy" in _one_line_error(capsys)
        (tmp_path / "imgs" / "b.png").write_bytes((tmp_path / "imgs" / "a.png").read_bytes())
        assert main(["init", str(project), "--images", str(tmp_path / "imgs")]) == 1
        assert "busy" in _one_line_error(capsys)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with ProjectStore.open(project) as store:
        assert store.count_images() == 1 and store.count_instances() == 0


def test_a_full_disk_during_an_import(project, tmp_path, capsys, monkeypatch):
    real_open = ProjectStore.open.__func__

    def open_on_a_full_disk(cls, folder, **kwargs):
        store = real_open(cls, folder, **kwargs)
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
        return store

    monkeypatch.setattr(ProjectStore, "open", classmethod(open_on_a_full_disk))
    capsys.readouterr()
    args = ["import-coco", str(project), str(_coco(tmp_path)), "--images-root"]
    assert main([*args, str(tmp_path / "imgs")]) == 1
    assert "disk holding" in _one_line_error(capsys)
    monkeypatch.undo()
    with ProjectStore.open(project) as store:
        assert store.count_instances() == 0 and store.integrity_ok()


def test_sqlite_errors_outside_a_write_are_one_line_too(project, capsys, monkeypatch):
    def locked_read(args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(project_cmds, "_info", locked_read)
    capsys.readouterr()
    assert main(["info", str(project)]) == 1
    assert "busy" in _one_line_error(capsys)
