"""An import never wipes an image with shapes it could not read, nor marks it done empty."""

import base64
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from app.core.coco import CocoImportError, import_coco
from app.core.geometry import mask_to_polygons
from app.core.label_maps import import_label_maps
from app.core.labelme import import_labelme
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance

H, W = 40, 60
SQUARE = [[10, 10], [30, 10], [30, 30], [10, 30]]


@pytest.fixture
def store(tmp_path: Path):
    """A project with one image, a.png, holding three instances and in progress."""
    folder = tmp_path / "data"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((H, W), np.uint8))
    s = ProjectStore.open(tmp_path / "proj", create=True)
    s.add_category("cell", id=1)
    (iid,) = s.add_images([NewImage("../data/a.png", W, H)])
    m = np.zeros((H, W), np.uint8)
    for x in (10, 25, 40):
        m[:] = 0
        m[5:12, x : x + 6] = 1
        s.add_instances(iid, [Instance(1, mask_to_polygons(m))])
    s.set_image_status(iid, ImageStatus.IN_PROGRESS)
    yield s
    s.close()


def _state(store: ProjectStore) -> tuple[ImageStatus, int]:
    (image,) = store.images()
    return image.status, store.count_instances(image.id)


def _labelme(folder: Path, shapes: object, **extra: object) -> None:
    doc = {"shapes": shapes, "imagePath": "a.png", "imageWidth": W, "imageHeight": H, **extra}
    (folder / "a.json").write_text(json.dumps(doc))


def _mask_png(width: int, height: int) -> str:
    ok, png = cv2.imencode(".png", np.full((height, width), 255, np.uint8))
    assert ok
    return base64.b64encode(png.tobytes()).decode()


BAD_SHAPES = {
    "two-point polygon": [{"label": "cell", "points": [[1, 1], [5, 5]], "shape_type": "polygon"}],
    "line and point": [
        {"label": "cell", "points": [[1, 1], [5, 5]], "shape_type": "line"},
        {"label": "cell", "points": [[3, 3]], "shape_type": "point"},
    ],
    "NaN point": [{"label": "cell", "points": [[1, 1], [5, "nan"], [9, 2]]}],
    "true as a coordinate": [{"label": "cell", "points": [[True, 1], [5, 5], [9, 2]]}],
    "bad mask": [{"label": "cell", "points": [[1, 1], [5, 5]], "shape_type": "mask", "mask": "@@"}],
    "wholly outside": [{"label": "cell", "points": [[100, 100], [120, 100], [120, 130]]}],
    "mask far outside": [
        {
            "label": "cell",
            "points": [[5000, 5000], [5004, 5004]],
            "shape_type": "mask",
            "mask": _mask_png(4, 4),
        }
    ],  # fmt: skip
    "mask bigger than the image": [
        {
            "label": "cell",
            "points": [[0, 0], [200, 200]],
            "shape_type": "mask",
            "mask": _mask_png(200, 200),
        }
    ],  # fmt: skip
}


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_labelme_file_whose_shapes_all_fail_leaves_the_image(store, tmp_path, case, replace):
    _labelme(tmp_path / "data", BAD_SHAPES[case])
    report = import_labelme(store, tmp_path / "data", replace=replace)
    assert _state(store) == (ImageStatus.IN_PROGRESS, 3)
    assert report.images == 0 and not report.deleted
    assert any("left as it was" in why for _, why in report.skipped)


def test_labelme_without_a_shapes_list_is_skipped(store, tmp_path):
    _labelme(tmp_path / "data", {"not": "a list"})
    report = import_labelme(store, tmp_path / "data", replace=True)
    assert _state(store) == (ImageStatus.IN_PROGRESS, 3) and report.images == 0


def test_replace_uses_what_parsed_and_says_what_it_deleted(store, tmp_path):
    shapes = [{"label": "cell", "points": SQUARE}, *BAD_SHAPES["two-point polygon"]]
    _labelme(tmp_path / "data", shapes)
    report = import_labelme(store, tmp_path / "data", replace=True)
    assert _state(store) == (ImageStatus.DONE, 1)
    assert report.deleted == [("../data/a.png", 3)] and report.instances == 1


def test_an_explicitly_empty_file_marks_the_image_done(store, tmp_path):
    _labelme(tmp_path / "data", [])
    report = import_labelme(store, tmp_path / "data", replace=True)
    assert _state(store) == (ImageStatus.DONE, 0) and report.deleted == [("../data/a.png", 3)]


def _coco(tmp_path: Path, annotations: list) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": annotations,
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def _polygon(image_id: int = 1, **extra: object) -> dict:
    return {"id": 1, "image_id": image_id, "category_id": 1,
            "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]], **extra}  # fmt: skip


def test_coco_image_with_only_crowd_regions_is_left_alone(store, tmp_path):
    path = _coco(tmp_path, [_polygon(iscrowd=1), {**_polygon(iscrowd=1), "id": 2}])
    report = import_coco(store, path, images_root=tmp_path / "data", replace=True, crowd="skip")
    assert _state(store) == (ImageStatus.IN_PROGRESS, 3) and report.images == 0


def test_coco_image_with_no_annotations_is_explicitly_empty(store, tmp_path):
    report = import_coco(store, _coco(tmp_path, []), images_root=tmp_path / "data", replace=True)
    assert _state(store) == (ImageStatus.DONE, 0) and report.deleted == [("../data/a.png", 3)]


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ([_polygon(), _polygon()], "id 1 is also annotations[0]"),
        ([{**_polygon(), "segmentation": [[True, 10, 30, 10, 30, 30]]}], "not true/false"),
        ([{**_polygon(), "segmentation": [[100, 100, 130, 100, 130, 130]]}], "wholly outside"),
    ],
)
def test_coco_malformed_annotations_change_nothing(store, tmp_path, annotations, problem):
    with pytest.raises(CocoImportError, match=re.escape(problem)):
        import_coco(store, _coco(tmp_path, annotations), images_root=tmp_path / "data")
    assert _state(store) == (ImageStatus.IN_PROGRESS, 3)


def test_coco_tiny_rle_claiming_a_huge_mask_allocates_nothing(store, tmp_path):
    side = 65536
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": side, "height": side}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": {"size": [side, side], "counts": [0, side * side]}}],
    }  # fmt: skip
    path = tmp_path / "bomb.json"
    path.write_text(json.dumps(data))
    assert path.stat().st_size < 400
    with pytest.raises(CocoImportError, match="above the limit"):
        import_coco(store, path, images_root=tmp_path / "data")
    data["images"][0].update(width=W, height=H)  # plausible, but not the real file's size
    data["images"][0]["file_name"] = "a.png"
    data["annotations"][0]["segmentation"]["size"] = [H, W]
    data["annotations"][0]["segmentation"]["counts"] = [0, H * W]
    path.write_text(json.dumps(data))
    import_coco(store, path, images_root=tmp_path / "data", replace=True)
    assert _state(store) == (ImageStatus.DONE, 1)


def test_rle_of_a_missing_image_is_not_decoded(store, tmp_path, monkeypatch):
    from app.core import coco

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded an RLE whose image is not there")

    monkeypatch.setattr(coco, "rle_to_mask_crop", must_not_decode)
    data = {
        "images": [{"id": 1, "file_name": "gone.png", "width": 5000, "height": 5000}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": {"size": [5000, 5000], "counts": [0, 25_000_000]}}],
    }  # fmt: skip
    path = tmp_path / "gone.json"
    path.write_text(json.dumps(data))
    report = import_coco(store, path, images_root=tmp_path / "data")
    assert report.images == 0 and "not found" in report.skipped[0][1]


def test_label_map_whose_ids_all_drop_leaves_the_image(store, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    lab = np.zeros((H, W), np.uint16)
    lab[2:4, 2:4] = 1
    cv2.imwrite(str(labels / "a.png"), lab)
    report = import_label_maps(store, labels, replace=True, min_area=50)
    assert _state(store) == (ImageStatus.IN_PROGRESS, 3) and report.images == 0
    cv2.imwrite(str(labels / "a.png"), np.zeros((H, W), np.uint16))  # says: empty
    import_label_maps(store, labels, replace=True)
    assert _state(store) == (ImageStatus.DONE, 0)


@pytest.mark.parametrize(
    ("shape", "reason"), [((5, H, W), "5 pages"), ((H * 50, W * 50), "3000x2000 px, its image")]
)
def test_label_tiff_is_refused_from_its_header(store, tmp_path, monkeypatch, shape, reason):
    labels = tmp_path / "labels"
    labels.mkdir()
    tifffile.imwrite(labels / "a.tif", np.ones(shape, np.uint16))
    decoded = []
    real = tifffile.TiffPage.asarray
    monkeypatch.setattr(
        tifffile.TiffPage, "asarray", lambda self, *a, **k: decoded.append(1) or real(self, *a, **k)
    )
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: decoded.append(1))
    report = import_label_maps(store, labels, replace=True)
    assert report.images == 0 and reason in report.skipped[0][1]
    assert decoded == [] and _state(store) == (ImageStatus.IN_PROGRESS, 3)
