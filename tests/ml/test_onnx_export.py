"""ONNX export: onnxruntime on the exported bundled model finds what the torch Predictor finds.

The consumer side is docs/examples/onnx_predict.py (numpy and onnxruntime only), so the
checks run through it: its input conversion against ``to_model_input``, its paste against
``masks_in_boxes``, and the whole script in a process that cannot import torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from app import paths
from app.core.extras import MissingExtraError
from app.core.geometry import polygons_to_mask_crop
from app.core.images import read_image
from app.ml import zoo
from app.ml.models import build_model
from app.ml.onnx_export import OUTPUT_NAMES, SCORE_FLOOR, OnnxExportError, export_onnx
from app.ml.predictor import (
    DEFAULT_TILE_OVERLAP,
    Predictor,
    RawDetections,
    global_spec,
    masks_in_boxes,
)
from app.ml.preprocess import InputSpec, to_model_input
from app.ml.tiling import tile_grid

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "onnx_predict.py"
REAL = paths.bundle_root() / "resources" / "demo_real"
# Fluorescence at an exact 2x resize, brightfield colour (grey + inverted), and a side
# (347 px) whose resize to 512 px rounds down: the case torchvision's traced resize gets wrong.
IMAGES = (
    "dsb2018_308084bdd358e0bd.png",
    "dsb2018_610f32e2d9d270d7.png",
    "dsb2018_df53d0b6c2c4e45d.png",
)
# 696x520, larger than the card's 512 px tile size: MaskLoop and the example cut it in two.
TILED = "dsb2018_1c8b905c9519061d.png"
THRESHOLD = 0.5

# Runs the example with torch (and MaskLoop itself) made unimportable, then says whether
# torch got loaded.
NO_TORCH_RUN = """
import importlib.abc, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "app"):
            raise ImportError(f"{name} must not be imported by the example")

sys.meta_path.insert(0, NoTorch())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("torch loaded" if "torch" in sys.modules else "torch not loaded")
"""


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("onnx_predict_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return _load_example()


@pytest.fixture(scope="module")
def card() -> zoo.ModelCard:
    return zoo.get_card("cells-mobile")


@pytest.fixture(scope="module")
def exported(card, tmp_path_factory):
    return export_onnx(card, tmp_path_factory.mktemp("onnx") / "cells.onnx")


@pytest.fixture(scope="module")
def session(example, exported):
    return example.session(exported.onnx_path)


@pytest.fixture(scope="module")
def torch_detections(card) -> dict[str, RawDetections]:
    """The Predictor's detections above the threshold, per image, in the image's pixels."""
    predictor = Predictor(card, device="cpu", score_threshold=THRESHOLD)
    return {
        name: predictor.detect([to_model_input(read_image(REAL / name), card.input)])[0]
        for name in IMAGES
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` with each of ``b``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _crop_iou(a: tuple[int, int, np.ndarray], b: tuple[int, int, np.ndarray]) -> float:
    """IoU of two masks placed at (x0, y0), over the window that holds both."""
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1 = max(a[0] + a[2].shape[1], b[0] + b[2].shape[1])
    y1 = max(a[1] + a[2].shape[0], b[1] + b[2].shape[0])
    if x1 - x0 > a[2].shape[1] + b[2].shape[1] or y1 - y0 > a[2].shape[0] + b[2].shape[0]:
        return 0.0  # apart
    return _iou(*(_full(m[0] - x0, m[1] - y0, m[2], (y1 - y0, x1 - x0)) for m in (a, b)))


def _full(x0: int, y0: int, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
    return out


@pytest.mark.parametrize("name", IMAGES)
def test_same_detections_as_the_torch_predictor(
    name, card, example, session, torch_detections
) -> None:
    """Boxes within 1 px, same labels and scores, mask IoU >= 0.98 after the same paste."""
    image = read_image(REAL / name)
    height, width = image.shape[:2]
    ref = torch_detections[name]
    assert len(ref.scores) >= 20  # real nuclei: the check is not on an empty image
    boxes, scores, labels, masks = session.run(
        None, {"image": example.to_model_input(image, card.input.to_dict())}
    )
    keep = scores > THRESHOLD
    boxes, scores, labels, masks = boxes[keep], scores[keep], labels[keep], masks[keep]
    assert len(scores) == len(ref.scores)
    ref_boxes = ref.boxes.numpy()
    match = _box_iou(ref_boxes, boxes).argmax(axis=1)
    assert sorted(match.tolist()) == list(range(len(scores)))  # one to one
    assert np.abs(boxes[match] - ref_boxes).max() <= 1.0
    assert np.abs(scores[match] - ref.scores).max() < 1e-3
    assert (labels[match] == ref.labels).all()
    # A detection whose mask has no pixel above 0.5 is dropped by both pastes alike.
    ref_crops = {crop.score: crop for crop in masks_in_boxes(ref, height, width)}
    ious = []
    for i, j in enumerate(match):
        crop = ref_crops.get(float(ref.scores[i]))
        pasted = example.paste(masks[j, 0], boxes[j], height, width)
        if crop is None and pasted is None:
            continue
        assert crop is not None and pasted is not None
        ours = _full(*pasted, (height, width))
        ious.append(_iou(ours, _full(crop.x0, crop.y0, crop.mask, (height, width))))
    assert len(ious) >= 0.9 * len(ref.scores)  # nearly all compared (a few masks are empty)
    assert min(ious) >= 0.98


def test_the_example_tiles_large_images_as_the_predictor_does(
    card, example, exported, session
) -> None:
    """Same objects, tile seams joined alike: the Predictor's instances (lossless polygons)
    against the example's detections, matched by mask IoU."""
    image = read_image(REAL / TILED)
    height, width = image.shape[:2]
    assert max(height, width) > card.input.max_size
    deploy = example.load_card(exported.onnx_path)
    ours = example.predict(session, deploy, image, THRESHOLD)
    predictor = Predictor(card, device="cpu", polygon_tolerance=0.0, min_area=0.0)
    theirs = predictor.predict(image)
    assert len(ours) == len(theirs) >= 100
    worst = 1.0
    for instance in theirs:
        crop, x0, y0 = polygons_to_mask_crop(instance.polygons, height, width)
        ious = {k: _crop_iou((x0, y0, crop), (d.x0, d.y0, d.mask)) for k, d in enumerate(ours)}
        best = max(ious, key=ious.get)
        worst = min(worst, ious[best])
        assert abs(ours[best].score - instance.score) < 1e-3
    assert worst >= 0.98


def test_the_example_runs_without_torch_and_writes_coco(
    exported, torch_detections, tmp_path
) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "predictions.json"
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_RUN, str(EXAMPLE), str(exported.onnx_path)]
        + [str(REAL / name) for name in IMAGES[:2]]
        + ["--out", str(out), "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("torch not loaded")
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["nucleus"]
    for image in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        raw = torch_detections[image["file_name"]]
        assert len(anns) == len(masks_in_boxes(raw, image["height"], image["width"]))
        assert all(a["score"] > THRESHOLD and coco.annToMask(a).any() for a in anns)


def test_the_deploy_card(card, exported) -> None:
    written = json.loads(exported.card_path.read_text())
    assert exported.card_path == exported.onnx_path.with_suffix(".json")
    assert written["format"] == "maskloop-onnx"
    assert written["onnx"]["sha256"] == hashlib.sha256(exported.onnx_path.read_bytes()).hexdigest()
    assert written["categories"] == [{"label": 1, "id": 1, "name": "nucleus"}]
    assert InputSpec.from_dict(written["input"]) == card.input
    assert written["thresholds"]["nms_iou"] == card.nms_iou
    assert written["thresholds"]["detections_per_img"] == card.detections_per_img
    sess = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [t["name"] for t in written["onnx"]["inputs"]]
    assert [o.name for o in sess.get_outputs()] == list(OUTPUT_NAMES)
    assert [t["name"] for t in written["onnx"]["outputs"]] == list(OUTPUT_NAMES)


@pytest.mark.parametrize(
    ("spec", "image"),
    [
        (InputSpec(), np.arange(48, dtype=np.uint8).reshape(4, 4, 3)),
        (InputSpec(normalize="percentile", channels="gray", invert="auto"),
         np.linspace(0, 4000, 60).astype(np.uint16).reshape(6, 10)),
        (InputSpec(channels="gray", invert="auto"),
         (255 - np.arange(64, dtype=np.uint8)).reshape(4, 4, 4)),
        (InputSpec(normalize="percentile", channels="stain", invert="auto"),
         np.dstack([np.full((6, 8), 230, np.uint8), np.arange(48, dtype=np.uint8).reshape(6, 8),
                    np.full((6, 8), 90, np.uint8)])),
        (InputSpec(channels="stain", invert="auto"),
         np.arange(96, dtype=np.uint8).reshape(4, 8, 3)),
        (InputSpec(normalize="minmax", invert="always"),
         np.array([[0.5, np.nan], [2.0, -1.0]], dtype=np.float32)),
        (InputSpec(normalize="fixed", low=10, high=20, channel=1),
         np.arange(50, dtype=np.uint16).reshape(5, 5, 2)),
        (InputSpec(), np.eye(5, dtype=bool)),
        (InputSpec(normalize="percentile", percentiles=(5.0, 95.0)),
         np.random.default_rng(0).normal(100, 30, (7, 9)).astype(np.float64)),
    ],
)  # fmt: skip
def test_example_input_conversion_is_maskloops(example, spec, image) -> None:
    ours = example.to_model_input(image, spec.to_dict())
    assert ours.dtype == np.float32 and ours.shape == (3, *image.shape[:2])
    np.testing.assert_allclose(ours, to_model_input(image, spec).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "image",
    [
        np.linspace(0, 4000, 3000 * 1500).astype(np.uint16).reshape(3000, 1500),  # strided
        np.random.default_rng(2).integers(100, 255, (40, 50, 3), dtype=np.uint8),
    ],
)
def test_example_tiling_is_maskloops(example, image) -> None:
    """Tile windows and the whole-image conversion every tile shares."""
    for channels in ("gray", "stain"):
        spec = InputSpec(normalize="percentile", channels=channels, invert="auto")
        fixed = example.whole_image_spec(image, spec.to_dict())
        assert InputSpec.from_dict(fixed) == global_spec(image, spec)
    for width, height, size in ((1500, 3000, 512), (696, 520, 512), (100, 90, 512), (97, 61, 40)):
        overlap = min(DEFAULT_TILE_OVERLAP, size // 2 - 1)
        grid = tile_grid(width, height, size, overlap) if max(width, height) > size else None
        expected = [(t.x0, t.y0, t.x1, t.y1) for t in grid] if grid else [(0, 0, width, height)]
        assert example.tiles(width, height, size, overlap) == expected


def test_example_paste_is_masks_in_boxes(example) -> None:
    rng = np.random.default_rng(1)
    n, height, width = 40, 50, 60
    corner = rng.uniform(-10, 55, (n, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.3, 30, (n, 2))], axis=1)
    probs = rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    raw = RawDetections(
        boxes=torch.from_numpy(boxes.astype(np.float32)),
        scores=np.linspace(1, 0.5, n, dtype=np.float32),
        labels=np.ones(n, dtype=np.int64),
        masks=torch.from_numpy(probs),
    )
    crops = {(c.x0, c.y0, c.score): c.mask for c in masks_in_boxes(raw, height, width)}
    pasted = {}
    for box, prob, score in zip(raw.boxes.numpy(), probs[:, 0], raw.scores, strict=True):
        result = example.paste(prob, box, height, width)
        if result is not None:
            pasted[(result[0], result[1], float(score))] = result[2]
    assert len(crops) > n // 2 and crops.keys() == pasted.keys()
    assert all(np.array_equal(crops[k], pasted[k]) for k in crops)


def test_missing_onnx_names_the_extra(card, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'maskloop\[export\]'"):
        export_onnx(card, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_an_onnx_name_is_required(card, tmp_path) -> None:
    with pytest.raises(OnnxExportError, match=r"\.onnx"):
        export_onnx(card, tmp_path / "m.json")


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_resnet_architectures_export_alike(architecture, example, tmp_path) -> None:
    """The other trainable architectures (random weights, small input) give the same outputs."""
    torch.manual_seed(0)
    model = build_model(architecture, num_classes=3, min_size=128, max_size=160)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    card = zoo.ModelCard.from_dict(
        {
            "id": "random",
            "title": "random weights",
            "architecture": architecture,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "input": {"min_size": 128, "max_size": 160},
            "detections_per_img": 30,
            "weights": {"file": "w.pt", "sha256": zoo.sha256_file(tmp_path / "w.pt")},
        },
        path=tmp_path / "random.json",
    )
    exported = export_onnx(card, tmp_path / "random.onnx")
    image = torch.from_numpy(np.random.default_rng(0).random((3, 100, 130), dtype=np.float32))
    boxes, scores, labels, masks = example.session(exported.onnx_path).run(
        None, {"image": image.numpy()}
    )
    ref = Predictor(card, device="cpu", score_threshold=SCORE_FLOOR).detect([image])[0]
    assert len(scores) == len(ref.scores) > 5
    np.testing.assert_allclose(boxes, ref.boxes.numpy(), atol=0.05)
    np.testing.assert_allclose(scores, ref.scores, atol=1e-3)
    assert (labels == ref.labels).all()
    np.testing.assert_allclose(masks, ref.masks.numpy(), atol=0.02)
