"""export-yolo, import-yolo, export-rois, import-rois end to end, and their error messages."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from app.core import extras
from app.core.geometry import mask_to_polygons, polygons_to_mask
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance

H, W = 32, 40


def _mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (15, 15), 9, 1, -1)
    cv2.circle(m, (15, 15), 3, 0, -1)
    m[25:30, 30:38] = 1
    return m


def _project(tmp_path: Path) -> Path:
    images = tmp_path / "imgs"
    images.mkdir()
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        store.add_category("cell", id=5)
        for name in ("a.png", "b.png", "c.png"):
            cv2.imwrite(str(images / name), np.zeros((H, W), np.uint8))
            (iid,) = store.add_images([NewImage(f"../imgs/{name}", W, H)])
            store.add_instances(iid, [Instance(5, mask_to_polygons(_mask()))])
            store.set_image_status(iid, ImageStatus.DONE)
    return tmp_path / "proj"


def _masks(project: Path) -> list[np.ndarray]:
    with ProjectStore.open(project) as store:
        return [
            polygons_to_mask(inst.polygons, H, W)
            for image in store.images()
            for inst in store.instances(image.id)
        ]


def test_yolo_export_then_import(tmp_path, capsys):
    proj = _project(tmp_path)
    out = tmp_path / "yolo"
    assert main(["export-yolo", str(proj), str(out), "--split", "val=0.4"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out / 'data.yaml'}" in text and "instances: 3 (3 with holes or parts)" in text
    assert "train" in text and "val" in text
    new = tmp_path / "new"
    assert main(["import-yolo", str(new), str(out), "--status", "proposed"]) == 0
    text = capsys.readouterr().out
    assert "images: 3 (3 added to the project), instances: 3" in text
    assert "categories added: 1:cell" in text
    assert all(np.array_equal(m, _mask() > 0) for m in _masks(new))


def test_rois_export_then_import(tmp_path, capsys):
    proj = _project(tmp_path)
    out = tmp_path / "rois"
    assert main(["export-rois", str(proj), str(out)]) == 0
    assert "wrote 3 ROI sets" in capsys.readouterr().out
    with ProjectStore.open(proj) as store:
        for image in store.images():
            store.apply_edit(image.id, delete=[i.id for i in store.instances(image.id)])
    assert main(["import-rois", str(proj), str(out)]) == 0
    assert "images: 3 (0 added to the project), instances: 3" in capsys.readouterr().out
    assert all(np.array_equal(m, _mask() > 0) for m in _masks(proj))
    assert main(["import-rois", str(proj), str(out), "--category", "dog"]) == 1
    assert "no category 'dog'; choose one of: cell" in capsys.readouterr().err


def test_bad_yolo_label_is_one_message_naming_file_and_line(tmp_path, capsys):
    proj = _project(tmp_path)
    out = tmp_path / "yolo"
    assert main(["export-yolo", str(proj), str(out), "--split", "val=0"]) == 0
    label = out / "labels" / "train" / "b.txt"
    label.write_text(label.read_text() + "0 0.5 0.5 0.7\n")
    capsys.readouterr()
    assert main(["import-yolo", str(tmp_path / "new"), str(out)]) == 1
    err = capsys.readouterr().err
    assert "labels/train/b.txt:2: odd number of coordinates (3)" in err
    assert "nothing was imported" in err
    with ProjectStore.open(tmp_path / "new") as store:
        assert store.images() == []


@pytest.mark.parametrize("split", ["val=2", "train=0.5", "val=0.6,test=0.5", "val"])
def test_bad_split_is_a_usage_error(tmp_path, capsys, split):
    with pytest.raises(SystemExit) as exit_:
        main(["export-yolo", str(tmp_path), str(tmp_path / "out"), "--split", split])
    assert exit_.value.code == 2
    assert "--split" in capsys.readouterr().err


def test_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    proj = _project(tmp_path)
    real = extras.importlib.import_module

    def no_roifile(name):
        if name == "roifile":
            raise ImportError("No module named 'roifile'")
        return real(name)

    monkeypatch.setattr(extras.importlib, "import_module", no_roifile)
    assert main(["export-rois", str(proj), str(tmp_path / "rois")]) == 1
    err = capsys.readouterr().err
    assert "needs the Python package 'roifile'" in err and "pip install 'maskloop[export]'" in err
    assert not (tmp_path / "rois").exists()
