"""Exports never write over the project's images or store, nor an existing file unasked."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from app.core.atomic import remove_stale_temps
from app.core.geometry import mask_to_polygons
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance

H, W = 24, 32


def _project(tmp_path: Path) -> Path:
    """A project whose images live inside it, in PROJECT/images (as `demo` makes them)."""
    proj = tmp_path / "proj"
    images = proj / "images"
    images.mkdir(parents=True)
    with ProjectStore.open(proj, create=True) as store:
        store.add_category("cell")
        for name in ("a.png", "b.png"):
            cv2.imwrite(str(images / name), np.full((H, W), 7, np.uint8))
            (iid,) = store.add_images([NewImage(f"images/{name}", W, H)])
            m = np.zeros((H, W), np.uint8)
            cv2.circle(m, (12, 12), 6, 1, -1)
            store.add_instances(iid, [Instance(1, mask_to_polygons(m))])
            store.set_image_status(iid, ImageStatus.DONE)
    return proj


def _images_unchanged(proj: Path) -> bool:
    return all(
        (im := cv2.imread(str(proj / "images" / n), cv2.IMREAD_UNCHANGED)) is not None
        and im.dtype == np.uint8
        and (im == 7).all()
        for n in ("a.png", "b.png")
    )


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_export_labels_into_the_images_folder_is_refused(tmp_path, capsys, overwrite):
    proj = _project(tmp_path)
    args = ["export-labels", str(proj), str(proj / "images"), "--status", "done,new"]
    assert main(args + overwrite) == 1
    err = capsys.readouterr().err
    assert "holds the project's images" in err and "images_labels" in err
    assert err.count("\n") == 1
    assert _images_unchanged(proj)


def test_export_labels_needs_overwrite_for_existing_maps(tmp_path, capsys):
    proj = _project(tmp_path)
    out = tmp_path / "labels"
    assert main(["export-labels", str(proj), str(out)]) == 0
    assert main(["export-labels", str(proj), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-labels", str(proj), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


@pytest.mark.parametrize("name", ["maskloop.sqlite", "maskloop.sqlite-wal", "images/a.png"])
def test_export_coco_never_replaces_the_store_or_an_image(tmp_path, capsys, name):
    proj = _project(tmp_path)
    before = (proj / "maskloop.sqlite").read_bytes()
    assert main(["export-coco", str(proj), str(proj / name), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert ("never replaces" in err or "destroy the project" in err) and err.count("\n") == 1
    with ProjectStore.open(proj) as store:
        assert store.integrity_ok() and store.count_instances() == 2
    assert (proj / "maskloop.sqlite").read_bytes()[:100] == before[:100]
    assert _images_unchanged(proj)


def test_export_coco_needs_overwrite_for_an_existing_file(tmp_path, capsys):
    proj = _project(tmp_path)
    out = tmp_path / "notes.json"
    out.write_text('{"mine": true}')
    assert main(["export-coco", str(proj), str(out)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"mine": True}
    assert main(["export-coco", str(proj), str(out), "--overwrite"]) == 0
    assert len(json.loads(out.read_text())["annotations"]) == 2


def test_temp_files_of_killed_exports_are_cleaned(tmp_path):
    proj = _project(tmp_path)
    out = tmp_path / "out.json"
    dead = tmp_path / f".out.json.{2**22 + 12345}.tmp"  # above any Linux pid_max
    dead.write_text("half")
    other = tmp_path / ".other.json.1.tmp"
    other.write_text("not ours")
    assert main(["export-coco", str(proj), str(out)]) == 0
    assert not dead.exists() and other.exists() and out.exists()
    assert not list(tmp_path.glob(".out.json.*"))
    assert remove_stale_temps(tmp_path, {"out.json", "other.json"}) == 0  # pid 1 is alive


def test_temp_label_maps_of_a_killed_export_are_cleaned(tmp_path):
    proj = _project(tmp_path)
    out = tmp_path / "labels"
    out.mkdir()
    dead = out / f".a.png.{2**22 + 12345}.tmp"
    dead.write_bytes(b"half")
    assert main(["export-labels", str(proj), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_failed_write_leaves_no_temp_and_the_old_file(tmp_path, monkeypatch):
    from app.core import coco

    proj = _project(tmp_path)
    out = tmp_path / "out.json"
    out.write_text("old")

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with ProjectStore.open(proj) as store, pytest.raises(coco.CocoExportError, match="space"):
        coco.export_coco(store, out, overwrite=True)
    monkeypatch.undo()
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
