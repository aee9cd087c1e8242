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
from torch import nn

from app.ml.evaluate import (
    EvaluationError,
    coco_metrics,
    evaluate_model,
    reviewer_counts,
)

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


class ReplayModel(nn.Module):
    """Returns prepared outputs in call order, like a detection model in eval mode."""

    def __init__(self, outputs: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = outputs
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert not self.training
        out = [self.outputs[self.calls + i] for i in range(len(images))]
        self.calls += len(images)
        return out


def sample(masks: list[np.ndarray], labels: list[int]) -> tuple[torch.Tensor, dict]:
    m = torch.from_numpy(np.stack(masks).astype(np.uint8))
    boxes = torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in map(box_of, masks)])
    return torch.rand(3, H, W), {"boxes": boxes, "labels": torch.tensor(labels), "masks": m}


def as_output(target: dict, scores: list[float]) -> dict[str, torch.Tensor]:
    return {
        "boxes": target["boxes"].float(),
        "labels": target["labels"],
        "scores": torch.tensor(scores),
        "masks": target["masks"].float()[:, None],
    }


def test_perfect_model_scores_one() -> None:
    data = [
        sample([disk(20, 20, 10), disk(60, 50, 15), disk(100, 30, 3)], [1, 1, 2]),
        sample([disk(40, 40, 20)], [2]),
    ]
    model = ReplayModel([as_output(t, [0.9] * len(t["labels"])) for _, t in data])
    model.train()
    result = evaluate_model(model, data, max_dets=1000)
    assert model.training, "evaluation must restore the training mode"
    assert result.segm.ap == pytest.approx(1.0)
    assert result.bbox.ap == pytest.approx(1.0)
    assert result.max_dets == 1000
    assert (result.reviewer.accepted, result.reviewer.edited) == (4, 0)
    assert (result.reviewer.rejected, result.reviewer.missed) == (0, 0)
    metrics = result.to_metrics()
    assert metrics["segm_AP50"] == pytest.approx(1.0) and metrics["max_dets"] == 1000
    assert result.to_dict()["ap_note"].startswith("AP read from COCOeval precision at maxDets=1000")


def test_imperfect_model_counts_work() -> None:
    image, target = sample([disk(20, 20, 10), disk(60, 50, 15)], [1, 1])
    fp = sample([disk(100, 70, 8)], [1])[1]
    out = as_output(target, [0.9, 0.9])
    pred = {
        "boxes": torch.cat([out["boxes"][:1], fp["boxes"].float()]),
        "labels": torch.tensor([1, 1]),
        "scores": torch.tensor([0.9, 0.7]),
        "masks": torch.cat([out["masks"][:1], fp["masks"].float()[:, None]]),
    }
    result = evaluate_model(ReplayModel([pred]), [(image, target)], max_dets=10)
    assert (result.reviewer.accepted, result.reviewer.rejected, result.reviewer.missed) == (1, 1, 1)
    assert 0.0 < result.segm.ap < 1.0
    assert result.detections == 2 and result.instances == 2


def test_empty_dataset_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="No images"):
        evaluate_model(ReplayModel([]), [])
