"""How good is a model on annotated images: COCO AP (segm and bbox) plus reviewer effort.

COCOeval's ``stats`` stop at 100 detections per image, which truncates dense cell images
holding hundreds of nuclei, so AP here is read from ``eval['precision']`` at ``max_dets``
(1000 by default); the result records which. The reviewer counts translate the model's
proposals into work: how many an annotator would accept as they are, fix, delete, or draw.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from app.errors import MaskLoopError
from app.ml.defaults import DEFAULT_MAX_DETS, DEFAULT_PROPOSAL_SCORE

log = logging.getLogger(__name__)

IOU_TYPES = ("segm", "bbox")
# A proposal this close to the truth needs no edit; between EDIT_IOU and this it is fixed
# by hand; below EDIT_IOU it does not describe the object and gets deleted.
ACCEPT_IOU = 0.85
EDIT_IOU = 0.5
MASK_THRESHOLD = 0.5
_RLE_CHUNK = 64


class EvaluationError(MaskLoopError):
    """Evaluation cannot run on the given data (nothing to evaluate, bad options)."""


@dataclass(frozen=True)
class APMetrics:
    """COCO average precision (IoU .50:.95, .50, .75, and by object area); -1 = no ground truth."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float

    def to_dict(self) -> dict[str, float]:
        return {
            "AP": self.ap,
            "AP50": self.ap50,
            "AP75": self.ap75,
            "APs": self.ap_small,
            "APm": self.ap_medium,
            "APl": self.ap_large,
        }


@dataclass(frozen=True)
class ReviewerCounts:
    """What a reviewer would do with the proposals (score >= ``proposal_score``)."""

    accepted: int  # mask IoU >= accept_iou with a ground-truth instance: kept as is
    edited: int  # edit_iou <= IoU < accept_iou: kept after fixing the outline
    rejected: int  # matches no ground truth: deleted
    missed: int  # ground truth no proposal found: drawn by hand
    proposal_score: float = DEFAULT_PROPOSAL_SCORE
    accept_iou: float = ACCEPT_IOU
    edit_iou: float = EDIT_IOU


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation; ``max_dets`` is the detections-per-image cap AP used."""

    segm: APMetrics
    bbox: APMetrics
    reviewer: ReviewerCounts
    max_dets: int
    images: int
    instances: int
    detections: int

    def to_metrics(self) -> dict[str, float]:
        """Flat numbers for a model version's card and the training progress events."""
        out: dict[str, float] = {}
        for iou_type in IOU_TYPES:
            for key, value in getattr(self, iou_type).to_dict().items():
                out[f"{iou_type}_{key}"] = value
        out["max_dets"] = float(self.max_dets)
        for key in ("accepted", "edited", "rejected", "missed"):
            out[f"reviewer_{key}"] = float(getattr(self.reviewer, key))
        out["eval_images"] = float(self.images)
        out["eval_instances"] = float(self.instances)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "segm": self.segm.to_dict(),
            "bbox": self.bbox.to_dict(),
            "max_dets": self.max_dets,
            "ap_note": f"AP read from COCOeval precision at maxDets={self.max_dets} "
            "(COCOeval.stats use 100)",
            "reviewer": asdict(self.reviewer),
            "images": self.images,
            "instances": self.instances,
            "detections": self.detections,
        }


@dataclass
class _Collected:
    """Ground truth and detections of all evaluated images, in COCO json form."""

    images: list[dict[str, Any]] = field(default_factory=list)
    gt: list[dict[str, Any]] = field(default_factory=list)
    segm: list[dict[str, Any]] = field(default_factory=list)
    bbox: list[dict[str, Any]] = field(default_factory=list)
    labels: set[int] = field(default_factory=set)


def _quiet(fn: Any, *args: Any) -> Any:
    # pycocotools reports progress with print(); keep library output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _gt_coco(gt: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = gt
    _quiet(coco.createIndex)
    return coco


def _empty_results(gt: dict[str, Any]) -> COCO:
    return _gt_coco({"images": gt["images"], "categories": gt["categories"], "annotations": []})


def _ap_from_precision(precision: np.ndarray, iou_thrs: np.ndarray) -> APMetrics:
    """Mean precision like COCOeval.summarize, at the single maxDets index 0."""

    def mean(iou: float | None, area: int) -> float:
        p = precision[:, :, :, area, 0]
        if iou is not None:
            p = p[np.where(np.isclose(iou_thrs, iou))[0]]
        valid = p[p > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    return APMetrics(
        ap=mean(None, 0),
        ap50=mean(0.5, 0),
        ap75=mean(0.75, 0),
        ap_small=mean(None, 1),
        ap_medium=mean(None, 2),
        ap_large=mean(None, 3),
    )


def coco_metrics(
    gt: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    iou_type: str,
    *,
    max_dets: int = DEFAULT_MAX_DETS,
) -> APMetrics:
    """COCOeval of ``detections`` (COCO results format) against the COCO dict ``gt``.

    AP values are means over ``eval['precision']`` at ``max_dets`` detections per image,
    computed the way COCOeval.summarize does; with ``max_dets=100`` they equal ``stats[:6]``.
    """
    if iou_type not in IOU_TYPES:
        raise EvaluationError(f"iou_type={iou_type!r}; use one of {', '.join(IOU_TYPES)}.")
    if max_dets < 1:
        raise EvaluationError(f"max_dets={max_dets}; it must be at least 1.")
    coco_gt = _gt_coco(gt)
    coco_dt = (
        _quiet(coco_gt.loadRes, [dict(d) for d in detections]) if detections else _empty_results(gt)
    )
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.params.maxDets = [max_dets]
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    return _ap_from_precision(evaluator.eval["precision"], evaluator.params.iouThrs)


def _encode(masks: np.ndarray) -> list[dict[str, Any]]:
    """RLEs of an (N, H, W) bool/uint8 stack, a chunk at a time to bound memory."""
    rles: list[dict[str, Any]] = []
    for start in range(0, len(masks), _RLE_CHUNK):
        chunk = np.asfortranarray(masks[start : start + _RLE_CHUNK].transpose(1, 2, 0), np.uint8)
        rles.extend(mask_utils.encode(chunk))
    return rles


def _xyxy_to_xywh(boxes: np.ndarray) -> list[list[float]]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]]).tolist()


def reviewer_counts(
    proposals: Sequence[dict[str, Any]],
    truth: Sequence[dict[str, Any]],
    *,
    accept_iou: float = ACCEPT_IOU,
    edit_iou: float = EDIT_IOU,
) -> tuple[int, int, int, int]:
    """(accepted, edited, rejected, missed) for one image.

    ``proposals`` and ``truth`` are dicts with an RLE ``segmentation`` and ``category_id``
    (proposals also ``score``). Proposals are matched greedily by descending score to the
    unmatched same-category truth instance of highest mask IoU.
    """
    if not proposals:
        return 0, 0, 0, len(truth)
    order = sorted(range(len(proposals)), key=lambda i: -proposals[i]["score"])
    if truth:
        ious = np.asarray(
            mask_utils.iou(
                [proposals[i]["segmentation"] for i in order],
                [t["segmentation"] for t in truth],
                [0] * len(truth),
            )
        ).reshape(len(order), len(truth))
    matched = np.zeros(len(truth), dtype=bool)
    same_cat = np.array(
        [[proposals[i]["category_id"] == t["category_id"] for t in truth] for i in order],
        dtype=bool,
    ).reshape(len(order), len(truth))
    accepted = edited = rejected = 0
    for row in range(len(order)):
        best_iou, best = -1.0, -1
        if truth:
            candidates = np.where(same_cat[row] & ~matched, ious[row], -1.0)
            best = int(np.argmax(candidates))
            best_iou = float(candidates[best])
        if best_iou >= edit_iou:
            matched[best] = True
            if best_iou >= accept_iou:
                accepted += 1
            else:
                edited += 1
        else:
            rejected += 1
    return accepted, edited, rejected, int((~matched).sum())


def _target_records(
    image_id: int, target: dict[str, torch.Tensor], first_ann_id: int
) -> list[dict[str, Any]]:
    masks = target["masks"].detach().cpu().numpy().astype(bool, copy=False)
    labels = target["labels"].detach().cpu().numpy().tolist()
    boxes = _xyxy_to_xywh(target["boxes"].detach().cpu().numpy())
    crowd = target.get("iscrowd")
    crowd_flags = crowd.detach().cpu().numpy().tolist() if crowd is not None else [0] * len(labels)
    records = []
    for k, (rle, label, box, iscrowd) in enumerate(
        zip(_encode(masks), labels, boxes, crowd_flags, strict=True)
    ):
        records.append(
            {
                "id": first_ann_id + k,
                "image_id": image_id,
                "category_id": int(label),
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": box,
                "iscrowd": int(iscrowd),
            }
        )
    return records


def _prediction_records(image_id: int, output: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    scores = output["scores"].detach().cpu().numpy().tolist()
    if not scores:
        return []
    labels = output["labels"].detach().cpu().numpy().tolist()
    boxes = _xyxy_to_xywh(output["boxes"].detach().cpu().numpy())
    masks = (output["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy()
    # Separate segm and bbox results: pycocotools' loadRes takes the area of a result that
    # has a "bbox" from the box, which would put masks in the wrong COCO area range.
    return [
        {
            "image_id": image_id,
            "category_id": int(label),
            "segmentation": rle,
            "bbox_xywh": box,
            "score": float(score),
        }
        for rle, label, box, score in zip(_encode(masks), labels, boxes, scores, strict=True)
    ]


def evaluate_model(
    model: nn.Module,
    dataset: Iterable[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    *,
    device: str | torch.device | None = None,
    max_dets: int = DEFAULT_MAX_DETS,
    proposal_score: float = DEFAULT_PROPOSAL_SCORE,
    accept_iou: float = ACCEPT_IOU,
    edit_iou: float = EDIT_IOU,
) -> EvalResult:
    """Run ``model`` on every (image, target) of ``dataset`` and score it like COCOeval.

    Targets hold ``boxes`` (XYXY), ``labels`` and ``masks`` (N, H, W) in the model's label
    space, and optionally ``iscrowd``. AP uses every detection up to ``max_dets`` per image
    (the model's own ``detections_per_img`` caps it too); reviewer counts use the proposals
    scoring at least ``proposal_score`` and ignore crowd regions. ``device`` defaults to the
    model's. The model's train/eval mode is restored afterwards.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    collected = _Collected()
    accepted = edited = rejected = missed = 0
    try:
        with torch.inference_mode():
            for index, (image, target) in enumerate(dataset):
                image_id = index + 1
                height, width = int(image.shape[-2]), int(image.shape[-1])
                collected.images.append({"id": image_id, "height": height, "width": width})
                truth = _target_records(image_id, target, len(collected.gt) + 1)
                output = model([image.as_subclass(torch.Tensor).to(device)])[0]
                preds = _prediction_records(image_id, output)
                collected.gt.extend(truth)
                for p in preds:
                    common = {k: p[k] for k in ("image_id", "category_id", "score")}
                    collected.segm.append({**common, "segmentation": p["segmentation"]})
                    collected.bbox.append({**common, "bbox": p["bbox_xywh"]})
                collected.labels.update(t["category_id"] for t in truth)
                collected.labels.update(p["category_id"] for p in preds)
                counts = reviewer_counts(
                    [p for p in preds if p["score"] >= proposal_score],
                    [t for t in truth if not t["iscrowd"]],
                    accept_iou=accept_iou,
                    edit_iou=edit_iou,
                )
                accepted += counts[0]
                edited += counts[1]
                rejected += counts[2]
                missed += counts[3]
    finally:
        model.train(was_training)
    if not collected.images:
        raise EvaluationError(
            "No images to evaluate: mark annotated images done, or pass a COCO file."
        )
    gt = {
        "images": collected.images,
        "annotations": collected.gt,
        "categories": [{"id": c, "name": str(c)} for c in sorted(collected.labels)],
    }
    metrics = {
        iou_type: coco_metrics(gt, getattr(collected, iou_type), iou_type, max_dets=max_dets)
        for iou_type in IOU_TYPES
    }
    result = EvalResult(
        segm=metrics["segm"],
        bbox=metrics["bbox"],
        reviewer=ReviewerCounts(
            accepted, edited, rejected, missed, proposal_score, accept_iou, edit_iou
        ),
        max_dets=max_dets,
        images=len(collected.images),
        instances=sum(1 for t in collected.gt if not t["iscrowd"]),
        detections=len(collected.segm),
    )
    log.info(
        "evaluated %d images: segm AP %.3f AP50 %.3f (maxDets=%d)",
        result.images,
        result.segm.ap,
        result.segm.ap50,
        max_dets,
    )
    return result
