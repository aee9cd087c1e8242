"""evaluate.py: AP equals pycocotools' own numbers, maxDets is honoured, reviewer counts."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from app.core.geometry import mask_to_polygons
from app.core.types import Instance
from app.ml.evaluate import (
    EvalImage,
    EvaluationError,
    coco_metrics,
    evaluate_predictor,
    reviewer_counts,
)
from app.ml.zoo import ModelCard

H, W = 96, 128


def disk(cx: float, cy: float, r: float, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def box_of(mask: np.ndarray) -> list[float]:
    return [float(v) for v in mask_utils.toBbox(rle(mask))]


def make_data(seed: int = 0, n_images: int = 4) -> tuple[dict, list[dict], list[dict]]:
    """GT of disks of all COCO area ranges; detections: jittered GT, misses, false positives."""
    rng = np.random.default_rng(seed)
    images, anns, segm, bbox = [], [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "height": H, "width": W})
        for _ in range(int(rng.integers(3, 9))):
            r = float(rng.choice([2.5, 4.0, 9.0, 14.0, 22.0]))
            cx, cy = rng.uniform(r, W - r), rng.uniform(r, H - r)
            cat = int(rng.integers(1, 3))
            m = disk(cx, cy, r)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": rle(m),
                    "area": float(m.sum()),
                    "bbox": box_of(m),
                    "iscrowd": 0,
                }
            )
            if rng.random() < 0.8:
                d = disk(
                    cx + rng.normal(0, 1.5), cy + rng.normal(0, 1.5), r * rng.uniform(0.8, 1.2)
                )
                score = float(rng.uniform(0.05, 1.0))
                segm.append(
                    {
                        "image_id": image_id,
                        "category_id": cat,
                        "segmentation": rle(d),
                        "score": score,
                    }
                )
                bbox.append(
                    {"image_id": image_id, "category_id": cat, "bbox": box_of(d), "score": score}
                )
        for _ in range(2):
            d = disk(rng.uniform(10, W - 10), rng.uniform(10, H - 10), 6.0)
            score = float(rng.uniform(0.0, 0.6))
            segm.append(
                {"image_id": image_id, "category_id": 1, "segmentation": rle(d), "score": score}
            )
            bbox.append({"image_id": image_id, "category_id": 1, "bbox": box_of(d), "score": score})
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    return gt, segm, bbox


def pycocotools_stats(gt: dict, dets: list[dict], iou_type: str, max_dets: int) -> list[float]:
    """AP, AP50, AP75, APs, APm, APl as COCOeval.summarize computes them at ``max_dets``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))  # loadRes edits the dicts in place
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        # summarize looks its AP row up at the maxDets *value* 100; relabel the third slot
        # (evaluated at max_dets) so all six numbers come from it.
        ev.params.maxDets = [1, 10, 100]
        ev.summarize()
    return list(ev.stats[:6])


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("max_dets", [100, 1000])
def test_ap_equals_pycocotools(iou_type: str, max_dets: int) -> None:
    gt, segm, bbox = make_data()
    dets = segm if iou_type == "segm" else bbox
    expected = pycocotools_stats(gt, dets, iou_type, max_dets)
    ours = coco_metrics(gt, dets, iou_type, max_dets=max_dets)
    got = [ours.ap, ours.ap50, ours.ap75, ours.ap_small, ours.ap_medium, ours.ap_large]
    assert 0.0 < ours.ap < 1.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_max_dets_counts_dense_images() -> None:
    """150 perfect detections on one image: AP is capped at maxDets=100, not at 1000."""
    images = [{"id": 1, "height": 200, "width": 300}]
    anns, dets = [], []
    for k in range(150):
        m = disk(10 + 20 * (k % 15), 10 + 20 * (k // 15), 6, 200, 300)
        anns.append(
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": rle(m),
                "area": float(m.sum()),
                "bbox": box_of(m),
                "iscrowd": 0,
            }
        )
        dets.append(
            {"image_id": 1, "category_id": 1, "segmentation": rle(m), "score": 1.0 - k / 1000}
        )
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "c"}]}
    assert coco_metrics(gt, dets, "segm", max_dets=1000).ap == pytest.approx(1.0)
    assert coco_metrics(gt, dets, "segm", max_dets=100).ap < 0.75


def test_no_detections_give_zero_ap() -> None:
    gt, _, _ = make_data(n_images=1)
    assert coco_metrics(gt, [], "segm").ap == 0.0


def test_reviewer_counts_thresholds() -> None:
    truth = [
        {"segmentation": rle(disk(20, 20, 10)), "category_id": 1},
        {"segmentation": rle(disk(60, 40, 10)), "category_id": 1},
        {"segmentation": rle(disk(100, 70, 8)), "category_id": 1},
        {"segmentation": rle(disk(20, 70, 8)), "category_id": 1},
    ]
    proposals = [
        {"segmentation": rle(disk(20.5, 20, 10)), "category_id": 1, "score": 0.9},  # accept
        {"segmentation": rle(disk(63, 40, 10)), "category_id": 1, "score": 0.8},  # edit
        {"segmentation": rle(disk(100, 70, 8)), "category_id": 2, "score": 0.8},  # wrong class
        {"segmentation": rle(disk(20, 20, 10)), "category_id": 1, "score": 0.5},  # duplicate
    ]
    assert reviewer_counts(proposals, truth) == (1, 1, 2, 2)
    assert reviewer_counts([], truth) == (0, 0, 0, 4)
    assert reviewer_counts(proposals, []) == (0, 0, 4, 0)


class ReplayPredictor:
    """Returns prepared instances in call order, like a Predictor (what evaluation runs)."""

    def __init__(self, outputs: list[list[Instance]]) -> None:
        self.card = ModelCard.from_dict(
            {
                "id": "replay",
                "title": "replay",
                "architecture": "maskrcnn_mobilenet_v3_fpn",
                "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
                "weights": {"file": "x.pt", "sha256": "0" * 64},
            }
        )
        self.outputs = outputs
        self.calls = 0

    def predict(self, image: np.ndarray) -> list[Instance]:
        out = self.outputs[self.calls]
        self.calls += 1
        return out


CATEGORY_OF_LABEL = {1: 7, 2: 9}


def truth_image(masks: list[np.ndarray], labels: list[int], **kw) -> EvalImage:
    return EvalImage.from_masks(np.zeros((H, W), np.uint8), np.stack(masks), labels, **kw)


def as_instances(masks: list[np.ndarray], labels: list[int], scores: list[float]) -> list[Instance]:
    return [
        Instance(CATEGORY_OF_LABEL[label], mask_to_polygons(m, tolerance=0.0), score)
        for m, label, score in zip(masks, labels, scores, strict=True)
    ]


def test_perfect_proposals_score_one() -> None:
    data = [
        ([disk(20, 20, 10), disk(60, 50, 15), disk(100, 30, 3)], [1, 1, 2]),
        ([disk(40, 40, 20)], [2]),
    ]
    predictor = ReplayPredictor([as_instances(m, lab, [0.9] * len(m)) for m, lab in data])
    result = evaluate_predictor(predictor, [truth_image(m, lab) for m, lab in data], max_dets=1000)
    assert result.segm.ap == pytest.approx(1.0)
    assert result.bbox.ap == pytest.approx(1.0)
    assert result.max_dets == 1000
    assert (result.reviewer.accepted, result.reviewer.edited) == (4, 0)
    assert (result.reviewer.rejected, result.reviewer.missed) == (0, 0)
    assert result.area_ratio is not None and result.area_ratio.median == pytest.approx(1.0)
    metrics = result.to_metrics()
    assert metrics["segm_AP50"] == pytest.approx(1.0) and metrics["max_dets"] == 1000
    assert metrics["area_ratio_median"] == pytest.approx(1.0)
    assert result.to_dict()["ap_note"].startswith("AP read from COCOeval precision at maxDets=1000")


def test_imperfect_proposals_counts_work_and_area_bias_shows() -> None:
    masks = [disk(20, 20, 10), disk(60, 50, 15)]
    big = disk(20, 20, 12)  # 1.44x the area of the first nucleus
    predictor = ReplayPredictor([as_instances([big, disk(100, 70, 8)], [1, 1], [0.9, 0.7])])
    result = evaluate_predictor(predictor, [truth_image(masks, [1, 1])], max_dets=10)
    assert (result.reviewer.edited, result.reviewer.rejected, result.reviewer.missed) == (1, 1, 1)
    assert 0.0 < result.segm.ap < 1.0
    assert result.detections == 2 and result.instances == 2
    assert result.area_ratio.median == pytest.approx(big.sum() / masks[0].sum(), rel=1e-6)


def test_figures_per_kind() -> None:
    a, b = [disk(20, 20, 10)], [disk(60, 50, 15)]
    predictor = ReplayPredictor([as_instances(a, [1], [0.9]), []])
    images = [truth_image(a, [1], kind="gray"), truth_image(b, [1], kind="bright")]
    result = evaluate_predictor(predictor, images)
    assert set(result.per_kind) == {"gray", "bright"}
    assert result.per_kind["gray"].segm.ap50 == pytest.approx(1.0)
    assert result.per_kind["bright"].segm.ap50 == 0.0
    assert result.per_kind["bright"].reviewer.missed == 1
    assert 0.0 < result.segm.ap50 < 1.0
    assert set(result.to_dict()["per_kind"]) == {"gray", "bright"}


def test_empty_dataset_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="No images"):
        evaluate_predictor(ReplayPredictor([]), [])


def test_evaluation_of_a_tiled_image_is_the_proposals_own_masks() -> None:
    """The evaluation path is the proposal path: with the proposals of a tiled image taken
    as the truth, evaluating the same predictor scores AP 1 and every proposal accepted."""
    from app.core.geometry import polygons_to_mask
    from app.ml.models import build_model
    from app.ml.predictor import Predictor

    card = ModelCard.from_dict(
        {
            "id": "tiny",
            "title": "tiny",
            "architecture": "maskrcnn_mobilenet_v3_fpn",
            "categories": [{"id": 7, "name": "nucleus"}],
            "input": {"min_size": 64, "max_size": 96},
            "detections_per_img": 50,
            "weights": {"file": "tiny.pt", "sha256": "0" * 64},
        }
    )
    torch.manual_seed(0)
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=64, max_size=96)
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(6.0)
    predictor = Predictor.from_model(
        model.eval(), card, device="cpu", score_threshold=0.0, tile_size=64, tile_overlap=16
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 170), dtype=np.uint8)
    proposals = predictor.predict(image)
    assert proposals, "the random model must propose something for the test to mean anything"
    masks = np.stack([polygons_to_mask(p.polygons, 150, 170) for p in proposals])
    truth = EvalImage.from_masks(image, masks, [1] * len(proposals))
    result = evaluate_predictor(predictor, [truth], proposal_score=0.0)
    assert result.segm.ap == pytest.approx(1.0)
    assert result.reviewer.accepted == len(proposals)
    assert result.area_ratio.median == pytest.approx(1.0)


def test_label_maps_with_kinds_from_a_manifest(tmp_path) -> None:
    import json

    import cv2

    from app.ml.eval_sources import eval_images, find_labelled_images

    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / "im" / f"{name}.png"), np.zeros((H, W), np.uint8))
        labels = np.zeros((H, W), np.uint16)
        labels[disk(30, 30, 8)] = 1
        labels[disk(70, 50, 10)] = 4
        if name != "c":
            cv2.imwrite(str(tmp_path / "lab" / f"{name}_masks.png"), labels)
    (tmp_path / "manifest.json").write_text(
        json.dumps([{"file": "a.png", "kind": "gray"}, {"file": "b.png", "kind": "bright"}])
    )
    (tmp_path / "val.txt").write_text("a.png\nb.png\n")
    pairs = find_labelled_images(
        tmp_path / "im", tmp_path / "lab", only=tmp_path / "val.txt",
        manifest=tmp_path / "manifest.json",
    )
    assert [(p.name, p.kind) for p in pairs] == [("a.png", "gray"), ("b.png", "bright")]
    images = list(eval_images(pairs))
    assert [len(e.truth) for e in images] == [2, 2] and images[1].kind == "bright"
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="has a label map"):
        find_labelled_images(tmp_path / "im", tmp_path / "empty")
    with pytest.raises(EvaluationError, match="does not exist"):
        find_labelled_images(tmp_path / "im", tmp_path / "missing")
