"""The interchange commands end to end: export-coco, import-coco, export/import-labels, labelme."""

import json
from pathlib import Path

import cv2
import numpy as np

from app.cli import main
from app.core.geometry import mask_to_polygons
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance

H, W = 32, 40


def _project(tmp_path: Path) -> Path:
    images = tmp_path / "imgs"
    images.mkdir()
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        store.add_category("cell", id=5)
        for name in ("a.png", "b.png"):
            cv2.imwrite(str(images / name), np.zeros((H, W), np.uint8))
            (iid,) = store.add_images([NewImage(f"../imgs/{name}", W, H)])
            m = np.zeros((H, W), np.uint8)
            cv2.circle(m, (15, 15), 9, 1, -1)
            cv2.circle(m, (15, 15), 3, 0, -1)
            store.add_instances(iid, [Instance(5, mask_to_polygons(m))])
            store.set_image_status(iid, ImageStatus.DONE)
    return tmp_path / "proj"


def test_coco_export_and_import(tmp_path, capsys):
    proj = _project(tmp_path)
    out = tmp_path / "out.json"
    assert main(["export-coco", str(proj), str(out), "--segmentation", "polygon"]) == 0
    text = capsys.readouterr().out
    assert "instances: 2" in text and "warning: 2 instances with holes" in text
    assert len(json.loads(out.read_text())["annotations"]) == 2
    new = tmp_path / "new"
    args = ["import-coco", str(new), str(out), "--images-root", str(tmp_path / "imgs")]
    assert main(args) == 0
    assert "images: 2 (2 added to the project), instances: 2" in capsys.readouterr().out
    assert main(args) == 0
    assert "use --replace" in capsys.readouterr().out


def test_import_errors_become_messages(tmp_path, capsys):
    proj = _project(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "../x.png", "width": 1, "height": 1}]})
    )
    assert main(["import-coco", str(proj), str(bad), "--images-root", str(tmp_path)]) == 1
    assert "images[0].file_name" in capsys.readouterr().err
    assert main(["export-coco", str(tmp_path / "nothing"), str(bad)]) == 1
    assert "not a MaskLoop project" in capsys.readouterr().err


def test_labels_round_trip_and_labelme(tmp_path, capsys):
    proj = _project(tmp_path)
    assert main(["export-labels", str(proj), str(tmp_path / "labels")]) == 0
    assert "wrote 2 label maps" in capsys.readouterr().out
    with ProjectStore.open(proj) as store:
        store.add_category("other")
    args = ["import-labels", str(proj), str(tmp_path / "labels"), "--category", "other"]
    assert main([*args, "--replace", "--status", "proposed"]) == 0
    assert "instances: 2" in capsys.readouterr().out
    assert main(["import-labels", str(proj), str(tmp_path / "labels"), "--category", "nope"]) == 1
    assert "no category 'nope'" in capsys.readouterr().err
    lm = tmp_path / "lm"
    lm.mkdir()
    shape = {"label": "cell", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}
    doc = {"shapes": [shape], "imagePath": "z.png", "imageHeight": H, "imageWidth": W}
    (lm / "z.json").write_text(json.dumps(doc))
    cv2.imwrite(str(lm / "z.png"), np.zeros((H, W), np.uint8))
    assert main(["import-labelme", str(proj), str(lm)]) == 0
    assert "images: 1 (1 added to the project), instances: 1" in capsys.readouterr().out
