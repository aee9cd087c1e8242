"""dataset.py: the split, samples from the store and from COCO files, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from app.core.geometry import polygons_to_mask
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon
from app.ml.dataset import (
    Augmentation,
    CocoFileDataset,
    DatasetError,
    ProjectDataset,
    category_labels,
    masks_to_boxes,
    rasterize,
    split_ids,
)
from app.ml.evaluate import evaluate_predictor
from app.ml.preprocess import InputSpec
from app.ml.zoo import ModelCard

SPEC = InputSpec(min_size=64, max_size=96)


def ellipse(cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> Polygon:
    pts = cv2.ellipse2Poly((int(cx), int(cy)), (int(a), int(b)), int(angle), 0, 360, 15)
    return Polygon(pts.astype(np.float32) + 0.25)


def write_image(path: Path, h: int, w: int, dtype: type = np.uint8) -> None:
    rng = np.random.default_rng(len(path.name))
    hi = 255 if dtype == np.uint8 else 4095
    cv2.imwrite(str(path), rng.integers(0, hi, size=(h, w)).astype(dtype))


def make_project(
    root: Path, n: int, *, h: int = 60, w: int = 80, done: bool = True
) -> ProjectStore:
    store = ProjectStore.create(root)
    nucleus = store.add_category("nucleus")
    other = store.add_category("debris")
    rows = []
    for k in range(n):
        name = f"img_{k:03d}.png"
        write_image(root / name, h, w, np.uint16 if k % 2 else np.uint8)
        rows.append(NewImage(name, w, h))
    for image_id in store.add_images(rows):
        store.add_instances(
            image_id,
            [
                Instance(nucleus.id, [ellipse(20, 20, 9, 6, 30)]),
                Instance(nucleus.id, [ellipse(55, 35, 12, 8)]),
                Instance(other.id, [ellipse(40, 50, 4, 4)]),
            ],
        )
        if done:
            store.set_image_status(image_id, ImageStatus.DONE)
    return store


def test_split_is_stored_deterministic_and_stable(tmp_path: Path) -> None:
    store = make_project(tmp_path / "a", 30)
    train, val = split_ids(store, 0.25)
    assert sorted(train + val) == sorted(r.id for r in store.images())
    assert 2 <= len(val) <= 15
    assert {store.image(i).split for i in val} == {"val"}
    assert split_ids(store, 0.25) == (train, val)
    # Same paths in another project: same split (it depends on the path, not the order).
    other = make_project(tmp_path / "b", 30)
    o_train, o_val = split_ids(other, 0.25)
    paths = lambda s, ids: {s.image(i).path for i in ids}  # noqa: E731
    assert paths(other, o_val) == paths(store, val)
    # New images never move the old ones.
    names = [f"new_{k}.png" for k in range(20)]
    for name in names:
        write_image(tmp_path / "a" / name, 60, 80)
    for image_id in store.add_images([NewImage(n, 80, 60) for n in names]):
        store.set_image_status(image_id, ImageStatus.DONE)
    train2, val2 = split_ids(store, 0.25)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    assert len(train2) + len(val2) == 50


def test_split_ignores_undone_and_keeps_a_val_image(tmp_path: Path) -> None:
    store = make_project(tmp_path, 3, done=False)
    assert split_ids(store) == ([], [])
    ids = [r.id for r in store.images()]
    for image_id in ids[:2]:
        store.set_image_status(image_id, ImageStatus.DONE)
    train, val = split_ids(store, 0.01)
    assert len(val) == 1 and len(train) == 1
    with pytest.raises(DatasetError):
        split_ids(store, 1.0)


def test_rasterize_equals_full_fill() -> None:
    polys = [
        [ellipse(20, 20, 9, 6, 30)],
        [Polygon(np.array([[-5, -5], [12, -3], [10, 14], [-4, 9]]) + 0.5)],  # leaves the image
        [Polygon(ellipse(50, 30, 15, 12).exterior, [ellipse(50, 30, 5, 4).exterior])],  # hole
        [ellipse(70, 50, 5, 3), ellipse(8, 50, 4, 6)],  # two parts
    ]
    masks = rasterize(polys, 60, 80)
    for k, p in enumerate(polys):
        np.testing.assert_array_equal(masks[k], polygons_to_mask(p, 60, 80))
    assert masks[2, 30, 50] == 0 and masks[2, 30, 40] == 1
    half = rasterize(polys, 30, 40, 0.5)
    scaled = [[Polygon(q.exterior * 0.5, [h * 0.5 for h in q.holes]) for q in p] for p in polys]
    for k, p in enumerate(scaled):
        np.testing.assert_array_equal(half[k], polygons_to_mask(p, 30, 40))


def test_masks_to_boxes_is_tight() -> None:
    m = torch.zeros(2, 10, 12, dtype=torch.uint8)
    m[0, 2:5, 3:9] = 1
    m[1, 9, 11] = 1
    assert masks_to_boxes(m).tolist() == [[3, 2, 9, 5], [11, 9, 12, 10]]
    assert masks_to_boxes(m[:0]).shape == (0, 4)


def test_masks_to_boxes_end_one_past_the_last_pixel() -> None:
    """MaskLoop's convention, not torchvision's: a box ends one past its last pixel."""
    rng = np.random.default_rng(0)
    m = torch.from_numpy(rng.random((5, 20, 30)) > 0.97)
    for mask, box in zip(m, masks_to_boxes(m).tolist(), strict=True):
        ys, xs = np.nonzero(mask.numpy())
        assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_project_samples_match_annotations(tmp_path: Path) -> None:
    store = make_project(tmp_path, 2)
    cats = store.categories()
    mapping = {cats[0].id: 1}  # "debris" is not a model category: left out
    ids = [r.id for r in store.images()]
    ds = ProjectDataset(store, ids, mapping, SPEC, train=False)
    assert len(ds) == 2
    for image_id, (image, target) in zip(ids, ds, strict=True):
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
        assert image.shape == (3, 60, 80) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
        assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
        assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
        assert target["labels"].tolist() == [1, 1]
        expected = [
            polygons_to_mask(i.polygons, 60, 80)
            for i in store.instances(image_id)
            if i.category_id == cats[0].id
        ]
        np.testing.assert_array_equal(target["masks"].numpy(), np.stack(expected).astype(np.uint8))
        assert torch.equal(
            target["boxes"].as_subclass(torch.Tensor), masks_to_boxes(target["masks"])
        )


def test_training_samples_shrink_and_stay_consistent(tmp_path: Path) -> None:
    store = make_project(tmp_path, 2, h=240, w=320)
    ids = [r.id for r in store.images()]
    mapping = category_labels([c.id for c in store.categories()])
    big = ProjectDataset(store, ids, mapping, SPEC, train=False)
    assert big[0][0].shape == (3, 240, 320)
    strong = Augmentation(
        crop_p=1.0, crop_scale=(0.1, 0.3), zoom_out_p=0.5, noise_p=1.0, blur_p=1.0
    )
    ds = ProjectDataset(store, ids, mapping, SPEC, train=True, augmentation=strong)
    torch.manual_seed(0)
    sizes = set()
    for _ in range(12):
        image, target = ds[0]
        sizes.add(tuple(image.shape[-2:]))
        masks = target["masks"]
        n = len(target["labels"])
        assert masks.shape[0] == n == target["boxes"].shape[0]
        assert masks.shape[-2:] == image.shape[-2:]
        assert bool(masks.flatten(1).any(dim=1).all())
        assert torch.equal(target["boxes"].as_subclass(torch.Tensor), masks_to_boxes(masks))
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert (64, 85) in sizes  # shrunk to the model's input size before the masks are made
    assert any(s != (64, 85) for s in sizes)  # zoomed out


class _Replay:
    """A Predictor stand-in that returns the given instances (what evaluation runs)."""

    def __init__(self, instances: list[Instance], category_id: int) -> None:
        self.card = ModelCard.from_dict(
            {
                "id": "replay",
                "title": "replay",
                "architecture": "maskrcnn_mobilenet_v3_fpn",
                "categories": [{"id": category_id, "name": "nucleus"}],
                "weights": {"file": "x.pt", "sha256": "0" * 64},
            }
        )
        self.instances = instances

    def predict(self, image: np.ndarray) -> list[Instance]:
        return self.instances


def test_crowd_regions_are_no_training_target_but_count_in_evaluation(tmp_path: Path) -> None:
    store = ProjectStore.create(tmp_path)
    nucleus = store.add_category("nucleus")
    write_image(tmp_path / "a.png", 60, 80)
    (image_id,) = store.add_images([NewImage("a.png", 80, 60)])
    plain = [
        Instance(nucleus.id, [ellipse(20, 20, 9, 6)]),
        Instance(nucleus.id, [ellipse(55, 35, 12, 8)]),
    ]
    crowd = Instance(nucleus.id, [ellipse(20, 48, 8, 6)], crowd=True)
    store.add_instances(image_id, [*plain, crowd])
    store.set_image_status(image_id, ImageStatus.DONE)
    assert [i.crowd for i in store.instances(image_id)] == [False, False, True]
    mapping = {nucleus.id: 1}
    still = Augmentation(
        flip=False, crop_p=0, zoom_out_p=0, brightness=0, contrast=0, blur_p=0, noise_p=0
    )
    _, train_target = ProjectDataset(
        store, [image_id], mapping, SPEC, train=True, augmentation=still
    )[0]
    assert train_target["labels"].tolist() == [1, 1] and "iscrowd" not in train_target
    expected = [polygons_to_mask(i.polygons, 60, 80).astype(np.uint8) for i in plain]
    np.testing.assert_array_equal(train_target["masks"].numpy(), np.stack(expected))

    evaluation = ProjectDataset(store, [image_id], mapping, SPEC, train=False)
    assert evaluation[0][1]["iscrowd"].tolist() == [0, 0, 1]
    (ev,) = evaluation.eval_images()
    assert ev.iscrowd == [0, 0, 1]
    # A detection on the crowd region is ignored, as COCOeval does: the two nuclei found
    # score AP 1; had the region been dropped, that detection would be a false positive.
    found = [Instance(nucleus.id, i.polygons, score=0.9) for i in [*plain, crowd]]
    result = evaluate_predictor(_Replay(found, nucleus.id), evaluation.eval_images())
    assert result.segm.ap == pytest.approx(1.0) and result.instances == 2


def test_changed_image_is_reported(tmp_path: Path) -> None:
    store = make_project(tmp_path, 1)
    write_image(tmp_path / "img_000.png", 30, 30)
    ds = ProjectDataset(store, [store.images()[0].id], {1: 1}, SPEC, train=False)
    with pytest.raises(DatasetError, match="changed"):
        ds[0]


def _coco(tmp_path: Path, file_name: str = "a.png") -> tuple[Path, list[np.ndarray]]:
    write_image(tmp_path / "a.png", 40, 50)
    poly = ellipse(15, 15, 8, 5)
    # Polygons in COCO files are rasterised the way pycocotools (and COCOeval) does it.
    m_poly = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects([poly.exterior.flatten().tolist()], 40, 50))
    )
    m_rle = np.zeros((40, 50), np.uint8)
    m_rle[20:30, 30:45] = 1
    m_crowd = np.zeros((40, 50), np.uint8)
    m_crowd[2:6, 40:48] = 1
    compressed = mask_utils.encode(np.asfortranarray(m_rle))
    compressed["counts"] = compressed["counts"].decode("ascii")
    # Uncompressed RLE: column-major run lengths starting with zeros.
    flat = m_crowd.flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    data = {
        "images": [{"id": 7, "file_name": file_name, "width": 50, "height": 40}],
        "categories": [{"id": 3, "name": "nucleus"}, {"id": 9, "name": "cell"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [poly.exterior.flatten().tolist()],
            },
            {"id": 2, "image_id": 7, "category_id": 9, "iscrowd": 0, "segmentation": compressed},
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [40, 50], "counts": counts},
            },
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path, [m_poly, m_rle, m_crowd]


def test_coco_file_polygons_and_rle(tmp_path: Path) -> None:
    path, expected = _coco(tmp_path)
    ds = CocoFileDataset(path, tmp_path, spec=SPEC)
    assert ds.categories == [(3, "nucleus"), (9, "cell")]
    image, target = ds[0]
    assert image.shape == (3, 40, 50)
    assert target["labels"].tolist() == [1, 2, 1]
    assert target["iscrowd"].tolist() == [0, 0, 1]
    for got, want in zip(target["masks"].numpy(), expected, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.uint8))
    train_ds = CocoFileDataset(
        path,
        tmp_path,
        spec=SPEC,
        train=True,
        augmentation=Augmentation(
            flip=False, crop_p=0, zoom_out_p=0, brightness=0, contrast=0, blur_p=0, noise_p=0
        ),
    )
    _, train_target = train_ds[0]
    assert train_target["labels"].tolist() == [1, 2]  # crowd regions are not trained on
    only_cells = CocoFileDataset(path, tmp_path, spec=SPEC, categories_map={9: 1})
    assert only_cells[0][1]["labels"].tolist() == [1]


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [40, 50], "counts": "\x7f\x7f\x7f"},  # outside the COCO alphabet
        {"size": [40, 50], "counts": "PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP"},  # a runaway number
        {"size": [4000, 5000], "counts": [0, 20000000]},  # not the image's size
    ],
)
def test_malformed_foreign_rle_is_a_clear_error(tmp_path: Path, rle: dict) -> None:
    path, _ = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"] = rle
    path.write_text(json.dumps(data))
    ds = CocoFileDataset(path, tmp_path, spec=SPEC)
    with pytest.raises(DatasetError, match="segmentation cannot be used"):
        ds[0]


@pytest.mark.parametrize("name", ["../a.png", "/etc/passwd", "sub/../../a.png", ""])
def test_coco_file_names_cannot_leave_images_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "images"
    root.mkdir()
    path, _ = _coco(tmp_path, name)
    with pytest.raises(DatasetError, match="outside the images folder"):
        CocoFileDataset(path, root, spec=SPEC)


def test_coco_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Cannot read"):
        CocoFileDataset(tmp_path / "missing.json", tmp_path, spec=SPEC)
    bad = tmp_path / "bad.json"
    bad.write_text('{"annotations": []}')
    with pytest.raises(DatasetError, match="not a COCO"):
        CocoFileDataset(bad, tmp_path, spec=SPEC)
