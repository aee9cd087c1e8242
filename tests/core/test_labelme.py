"""labelme import: polygon, rectangle, circle and mask shapes; group_id merges parts."""

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.geometry import polygons_to_mask
from app.core.labelme import LabelmeError, import_labelme
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus

H, W = 60, 80


def _mask_b64(mask: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    assert ok
    return base64.b64encode(png.tobytes()).decode()


def _doc(image_path: str, shapes: list) -> dict:
    return {"version": "5.4.1", "shapes": shapes, "imagePath": image_path,
            "imageData": None, "imageHeight": H, "imageWidth": W}  # fmt: skip


def test_import_shapes(tmp_path: Path):
    folder = tmp_path / "lm"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), np.zeros((H, W, 3), np.uint8))
    small = np.zeros((6, 8), bool)
    small[1:5, 2:7] = True
    shapes = [
        {"label": "cell", "points": [[10, 10], [30, 10], [30, 30], [10, 30]],
         "group_id": 1, "shape_type": "polygon"},
        {"label": "cell", "points": [[40, 10], [50, 20]], "group_id": 1,
         "shape_type": "rectangle"},
        {"label": "cell", "points": [[60, 40], [60, 48]], "group_id": None,
         "shape_type": "circle"},
        {"label": "debris", "points": [[5, 45], [12, 50]], "group_id": None,
         "shape_type": "mask", "mask": _mask_b64(small)},
        {"label": "cell", "points": [[1, 1], [5, 5]], "shape_type": "line"},
    ]  # fmt: skip
    (folder / "a.json").write_text(json.dumps(_doc("a.jpg", shapes)))
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        report = import_labelme(store, folder)
        assert report.images == 1 and report.images_added == 1 and report.instances == 3
        assert report.skipped and "no area" in report.skipped[0][1]
        (image,) = store.images()
        assert image.path == "../lm/a.jpg" and image.status == ImageStatus.DONE
        insts = store.instances(image.id)
        names = {c.id: c.name for c in store.categories()}
        grouped = insts[0]
        assert names[grouped.category_id] == "cell" and len(grouped.polygons) == 2
        assert polygons_to_mask(grouped.polygons, H, W).sum() == 400 + 100
        circle = polygons_to_mask(insts[1].polygons, H, W).sum()
        assert abs(circle - np.pi * 64) < 10
        mask = polygons_to_mask(insts[2].polygons, H, W)
        assert names[insts[2].category_id] == "debris"
        assert mask[46:50, 7:12].all() and mask.sum() == 20


def test_image_path_outside_the_folder_is_not_followed(tmp_path: Path):
    folder = tmp_path / "lm"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "secret.png"), np.zeros((H, W), np.uint8))
    shape = {"label": "x", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}
    (folder / "s.json").write_text(json.dumps(_doc("../secret.png", [shape])))
    (folder / "bad.json").write_text("{nope")
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        report = import_labelme(store, folder)
        assert report.images == 0 and store.count_images() == 0
        assert {w for w, _ in report.skipped} == {"s.json", "bad.json"}


def test_matches_project_image_by_stem(tmp_path: Path):
    folder = tmp_path / "lm"
    folder.mkdir()

    shape = {"label": "x", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}
    (folder / "s.json").write_text(json.dumps(_doc("C:\\data\\pic.png", [shape])))
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        store.add_images([NewImage("imgs/pic.png", W, H)])
        report = import_labelme(store, folder, status=ImageStatus.PROPOSED)
        assert report.instances == 1
        assert store.images()[0].status == ImageStatus.PROPOSED


def test_empty_folder(tmp_path: Path):
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        with pytest.raises(LabelmeError):
            import_labelme(store, tmp_path)


def test_files_matched_by_stem_list_the_project_once(tmp_path: Path, monkeypatch):
    """Each file's image is found by name without listing every project image per file."""
    folder = tmp_path / "lm"
    folder.mkdir()
    shape = {"label": "x", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}
    for i in range(4):
        (folder / f"s{i}.json").write_text(json.dumps(_doc(f"C:\\data\\pic{i}.png", [shape])))
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        store.add_images([NewImage(f"imgs/pic{i}.png", W, H) for i in range(4)])
        listings = []
        listed = store.images
        monkeypatch.setattr(store, "images", lambda **kw: listings.append(kw) or listed(**kw))
        report = import_labelme(store, folder)
        assert report.images == 4 and report.instances == 4
        assert len(listings) == 1
