"""The predictor: same masks as torchvision's stock path, tiling, input kinds, cancellation.

Random-weight models give random masks near probability 0.5; where a test needs definite
masks it biases the mask predictor (``mask_fcn_logits.bias``), which makes every mask its
full box. Detections are forced with score threshold 0.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from app.core.geometry import polygons_to_mask
from app.core.types import Source
from app.errors import MaskLoopError
from app.ml.models import build_model
from app.ml.predictor import (
    PredictionCancelled,
    Predictor,
    RawDetections,
    fold_batchnorm,
    global_spec,
    masks_in_boxes,
)
from app.ml.preprocess import InputSpec, to_model_input
from app.ml.zoo import ModelCard


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def test_a_full_mask_covers_exactly_its_box() -> None:
    """The paste convention: an M x M mask spans the box in continuous pixel coordinates."""
    ones = torch.ones(2, 1, 28, 28)
    boxes = torch.tensor([[12.0, 10.0, 20.0, 25.0], [12.3, 40.0, 20.3, 47.6]])
    raw = RawDetections(boxes, np.array([0.9, 0.8]), np.ones(2, int), ones)
    a, b = masks_in_boxes(raw, 60, 60)
    assert (a.x0, a.y0, a.mask.shape, int(a.mask.sum())) == (12, 10, (15, 8), 120)
    # Pixels whose centres lie inside [12.3, 20.3) x [40, 47.6): columns 12..19, rows 40..47.
    window = b.window(0, 0, 60, 60)
    assert np.array_equal(np.argwhere(window.any(0)).ravel(), np.arange(12, 20))
    assert np.array_equal(np.argwhere(window.any(1)).ravel(), np.arange(40, 48))


def test_mask_targets_pasted_back_give_the_object() -> None:
    """Training targets (models.box_mask_targets) and the paste share one convention: the
    target of an object over its own box, pasted onto that box, is the object again."""
    from app.ml.dataset import masks_to_boxes
    from app.ml.models import box_mask_targets

    rng = np.random.default_rng(3)
    h = w = 96
    masks = []
    for _ in range(30):
        m = np.zeros((h, w), np.uint8)
        axes = (int(rng.integers(4, 16)), int(rng.integers(4, 16)))
        centre = (int(rng.integers(20, 76)), int(rng.integers(20, 76)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(m)
    gt = torch.from_numpy(np.stack(masks))
    boxes = masks_to_boxes(gt)
    targets = box_mask_targets(gt.float(), boxes, torch.arange(len(gt)), 28)
    raw = RawDetections(boxes, np.ones(len(gt)), np.ones(len(gt), int), targets[:, None])
    ratios = []
    for crop, m in zip(masks_in_boxes(raw, h, w), masks, strict=True):
        ours = crop.window(0, 0, w, h)
        assert _iou(ours, m.astype(bool)) >= 0.9
        ratios.append(ours.sum() / m.sum())
    assert 0.97 <= float(np.median(ratios)) <= 1.03


def test_predict_returns_model_instances_in_image_coordinates(card, model, image) -> None:
    biased = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=3, min_size=64, max_size=96)
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(8.0)
    pred = Predictor.from_model(
        biased, card, device="cpu", score_threshold=0.0, max_detections=12, model_version=4
    )
    instances = pred.predict(image)
    assert 0 < len(instances) <= 12
    scores = [i.score for i in instances]
    assert scores == sorted(scores, reverse=True)
    for inst in instances:
        assert inst.source is Source.MODEL and inst.model_version == 4
        assert inst.category_id in (7, 9)
        for poly in inst.polygons:
            assert poly.exterior.min() >= 0
            assert poly.exterior[:, 0].max() <= 96 and poly.exterior[:, 1].max() <= 80
    # Mask = box: each polygon fills (almost) its box.
    raw = pred.detect([to_model_input(image, card.input)])[0]
    best = raw.boxes[0].numpy()
    area = polygons_to_mask(instances[0].polygons, 80, 96).sum()
    box_area = (min(best[2], 96) - max(best[0], 0)) * (min(best[3], 80) - max(best[1], 0))
    assert area == pytest.approx(box_area, rel=0.2, abs=6)


def test_same_detections_as_the_stock_model(card, model, image) -> None:
    pred = Predictor.from_model(model, card, device="cpu", score_threshold=0.0, max_detections=30)
    stock = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=3, min_size=64, max_size=96)
    stock.load_state_dict(model.state_dict())
    stock.eval().roi_heads.score_thresh = 0.0
    stock.roi_heads.detections_per_img = 30
    x = to_model_input(image, card.input)
    with torch.inference_mode():
        ref = stock([x])[0]
    raw = pred.detect([x])[0]
    assert torch.allclose(raw.boxes, ref["boxes"], atol=0.05)
    assert np.array_equal(raw.labels, ref["labels"].numpy())
    # Masks differ from torchvision's paste by design (test_a_full_mask_covers_exactly_its_box).


def test_from_model_leaves_the_callers_model_alone(card, model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threshold = model.roi_heads.score_thresh
    Predictor.from_model(model, card, device="cpu", score_threshold=0.9)
    assert model.roi_heads.score_thresh == threshold
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fold_batchnorm_keeps_outputs(model) -> None:
    import copy

    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) > 10
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        a, b = model.backbone(x), folded.backbone(x)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4, rtol=1e-3)


def test_threshold_and_max_detections(card, model, image) -> None:
    many = Predictor.from_model(model, card, device="cpu", score_threshold=0.0, max_detections=5)
    assert len(many.predict(image)) <= 5
    none = Predictor.from_model(model, card, device="cpu", score_threshold=1.0)
    assert none.predict(image) == []


def test_detector_settings_default_to_the_card(card, model) -> None:
    plain = Predictor.from_model(model, card, device="cpu")
    assert plain.model.roi_heads.nms_thresh == 0.5
    assert plain.model.roi_heads.detections_per_img == 50
    dense = ModelCard.from_dict({**card.to_dict(), "nms_iou": 0.35, "detections_per_img": 700})
    tuned = Predictor.from_model(model, dense, device="cpu")
    assert tuned.model.roi_heads.nms_thresh == 0.35
    assert tuned.model.roi_heads.detections_per_img == 700
    chosen = Predictor.from_model(model, dense, device="cpu", nms_iou=0.6, max_detections=9)
    assert chosen.model.roi_heads.nms_thresh == 0.6
    assert chosen.model.roi_heads.detections_per_img == 9
    with pytest.raises(MaskLoopError, match="NMS IoU"):
        Predictor.from_model(model, dense, device="cpu", nms_iou=0.0)


@pytest.mark.parametrize("kind", ["gray", "gray3", "rgba", "uint16"])
def test_input_kinds(card, model, image, kind: str) -> None:
    pred = Predictor.from_model(model, card, device="cpu", score_threshold=0.0, max_detections=5)
    gray = image[:, :, 0]
    arrays = {
        "gray": gray,
        "gray3": np.repeat(gray[:, :, None], 3, axis=2),
        "rgba": np.dstack([image, np.full(gray.shape, 255, np.uint8)]),
        "uint16": image.astype(np.uint16) * 257,
    }
    out = pred.predict(arrays[kind])
    assert len(out) == 5
    if kind == "gray3":
        assert [i.score for i in out] == [i.score for i in pred.predict(gray)]
    if kind == "rgba":
        assert [i.score for i in out] == [i.score for i in pred.predict(image)]


def _bright_blob_detector(tensors: list[torch.Tensor]) -> list[RawDetections]:
    """A stand-in detector that segments bright pixels: one detection per input."""
    out = []
    for t in tensors:
        mask = (t[0] > 0.5).numpy()
        if not mask.any():
            out.append(
                RawDetections(
                    torch.zeros(0, 4), np.zeros(0), np.zeros(0, int), torch.zeros(0, 1, 28, 28)
                )
            )
            continue
        ys, xs = np.nonzero(mask)
        crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
        m28 = cv2.resize(crop, (28, 28), interpolation=cv2.INTER_AREA)
        box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
        out.append(
            RawDetections(box, np.array([0.9]), np.array([1]), torch.from_numpy(m28)[None, None])
        )
    return out


def test_tiled_prediction_merges_an_object_cut_by_tiles(card, model, monkeypatch) -> None:
    pred = Predictor.from_model(model, card, device="cpu", tile_size=64, tile_overlap=24)
    calls = []

    def detect(tensors):
        calls.append(len(tensors))
        return _bright_blob_detector(tensors)

    monkeypatch.setattr(pred, "detect", detect)
    img = np.full((150, 200), 1000, np.uint16)  # 16-bit: tiles share one intensity mapping
    cv2.circle(img, (100, 75), 22, 60000, -1)
    img[0, 0] = 0
    instances = pred.predict(img)
    assert len(calls) > 4  # it was tiled
    assert len(instances) == 1
    truth = img > 30000
    assert _iou(polygons_to_mask(instances[0].polygons, 150, 200), truth) >= 0.9


def test_global_spec_matches_whole_image_conversion() -> None:
    rng = np.random.default_rng(2)
    img = rng.gamma(2.0, 300.0, (300, 200)).astype(np.uint16)
    spec = InputSpec()
    fixed = global_spec(img, spec)
    assert fixed.normalize == "fixed"
    whole = to_model_input(img, spec)
    assert torch.allclose(to_model_input(img, fixed), whole, atol=2e-3)
    assert global_spec(img.astype(np.uint8), spec) is spec


def test_cancellation_between_tiles_and_batch_items(card, model, image, monkeypatch) -> None:
    pred = Predictor.from_model(model, card, device="cpu", tile_size=32, tile_overlap=8)
    calls = []
    monkeypatch.setattr(pred, "detect", lambda t: calls.append(1) or _bright_blob_detector(t))
    with pytest.raises(PredictionCancelled):
        pred.predict(image, should_stop=lambda: len(calls) >= 2)
    assert len(calls) == 2
    small = Predictor.from_model(model, card, device="cpu")
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(PredictionCancelled):
        small.predict_batch([image, image, image], should_stop=stop)
    assert len(asked) == 2


def test_predict_batch_equals_single_predictions(card, model, image) -> None:
    pred = Predictor.from_model(model, card, device="cpu", score_threshold=0.0, max_detections=5)
    flipped = np.ascontiguousarray(image[::-1])
    batch = pred.predict_batch([image, flipped])
    assert [i.score for i in batch[0]] == [i.score for i in pred.predict(image)]
    assert [i.score for i in batch[1]] == [i.score for i in pred.predict(flipped)]
