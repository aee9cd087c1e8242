"""How good is a model on annotated images: COCO AP (segm and bbox) plus reviewer effort.

Every figure is measured on what the annotator reviews: the :class:`Predictor`'s instances
(the card's input conversion, tiling, detector settings, mask paste, polygons and precision),
rasterised back to masks, never on torchvision's stock forward pass.

COCOeval's ``stats`` stop at 100 detections per image, which truncates dense cell images
holding hundreds of nuclei, so AP here is read from ``eval['precision']`` at ``max_dets``
(1000 by default); the result records which. The reviewer counts translate the model's
proposals into work: how many an annotator would accept as they are, fix, delete, or draw.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from app.core.geometry import polygons_to_mask_crop
from app.core.types import Instance
from app.errors import MaskLoopError
from app.ml.defaults import DEFAULT_MAX_DETS, DEFAULT_PROPOSAL_SCORE
from app.ml.metric_keys import (
    AP,
    AP50,
    AP75,
    AP_LARGE,
    AP_MEDIUM,
    AP_SMALL,
    AREA_RATIO_MEDIAN,
    EVAL_IMAGES,
    EVAL_INSTANCES,
    IOU_TYPES,
    MAX_DETS,
    REVIEWER_KINDS,
    ap_key,
    reviewer_key,
)
from app.ml.predictor import Predictor
from app.ml.zoo import ModelCard

log = logging.getLogger(__name__)

# A proposal this close to the truth needs no edit; between EDIT_IOU and this it is fixed
# by hand; below EDIT_IOU it does not describe the object and gets deleted.
ACCEPT_IOU = 0.85
EDIT_IOU = 0.5
# Detections down to this score enter AP (the whole precision/recall curve; torchvision's
# default box_score_thresh); reviewers see only those at or above the proposal score.
AP_SCORE_FLOOR = 0.05
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
            AP: self.ap,
            AP50: self.ap50,
            AP75: self.ap75,
            AP_SMALL: self.ap_small,
            AP_MEDIUM: self.ap_medium,
            AP_LARGE: self.ap_large,
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
class AreaRatio:
    """Predicted / true area of proposals matched to a truth instance (mask IoU >= edit_iou):
    1.0 is a mask that fits; above 1 masks come out too large."""

    p10: float
    median: float
    p90: float
    matched: int

    @classmethod
    def of(cls, ratios: Sequence[float]) -> AreaRatio | None:
        if not ratios:
            return None
        p10, median, p90 = np.percentile(np.asarray(ratios, dtype=np.float64), [10, 50, 90])
        return cls(float(p10), float(median), float(p90), len(ratios))


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation; ``max_dets`` is the detections-per-image cap AP used.
    ``per_kind`` holds the same figures for each kind of image (manifest, subfolder)."""

    segm: APMetrics
    bbox: APMetrics
    reviewer: ReviewerCounts
    max_dets: int
    images: int
    instances: int
    detections: int
    area_ratio: AreaRatio | None = None
    per_kind: dict[str, EvalResult] = field(default_factory=dict)

    def to_metrics(self) -> dict[str, float]:
        """Flat numbers for a model version's card and the training progress events."""
        out: dict[str, float] = {}
        for iou_type in IOU_TYPES:
            for key, value in getattr(self, iou_type).to_dict().items():
                out[ap_key(iou_type, key)] = value
        out[MAX_DETS] = float(self.max_dets)
        for kind in REVIEWER_KINDS:
            out[reviewer_key(kind)] = float(getattr(self.reviewer, kind))
        out[EVAL_IMAGES] = float(self.images)
        out[EVAL_INSTANCES] = float(self.instances)
        if self.area_ratio is not None:
            out[AREA_RATIO_MEDIAN] = self.area_ratio.median
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "segm": self.segm.to_dict(),
            "bbox": self.bbox.to_dict(),
            "max_dets": self.max_dets,
            "ap_note": f"AP read from COCOeval precision at maxDets={self.max_dets} "
            "(COCOeval.stats use 100), on the proposals' own masks",
            "reviewer": asdict(self.reviewer),
            "area_ratio": asdict(self.area_ratio) if self.area_ratio else None,
            "images": self.images,
            "instances": self.instances,
            "detections": self.detections,
        }
        if self.per_kind:
            out["per_kind"] = {k: v.to_dict() for k, v in self.per_kind.items()}
        return out


@dataclass
class EvalImage:
    """One annotated image as evaluation sees it: the raw pixels (what the Predictor gets),
    its truth as RLEs in model labels (1-based), crowd flags, and an optional kind."""

    image: np.ndarray
    truth: list[dict[str, Any]]
    labels: list[int]
    iscrowd: list[int]
    kind: str | None = None
    name: str = ""

    @classmethod
    def from_masks(
        cls,
        image: np.ndarray,
        masks: np.ndarray,
        labels: Sequence[int],
        iscrowd: Sequence[int] | None = None,
        **kw: Any,
    ) -> EvalImage:
        """From (N, H, W) truth masks; empty masks are left out."""
        keep = [k for k in range(len(masks)) if masks[k].any()]
        crowd = list(iscrowd) if iscrowd is not None else [0] * len(masks)
        return cls(
            image,
            _encode(np.asarray(masks)[keep]) if keep else [],
            [int(labels[k]) for k in keep],
            [int(crowd[k]) for k in keep],
            **kw,
        )

    @classmethod
    def from_label_map(cls, image: np.ndarray, label_map: np.ndarray, **kw: Any) -> EvalImage:
        """From an instance label map (0 background, 1..N one object each), label 1."""
        lm = np.asarray(label_map)
        if lm.ndim != 2 or lm.shape != np.asarray(image).shape[:2]:
            raise EvaluationError(
                f"The label map {kw.get('name', '')} is {lm.shape}, the image "
                f"{np.asarray(image).shape[:2]}: they must be one 2-D plane of the same size."
            )
        rles = []
        for value in np.unique(lm):
            if value == 0:
                continue
            rles.extend(_encode((lm == value)[None]))
        return cls(image, rles, [1] * len(rles), [0] * len(rles), **kw)


@dataclass
class _ImageRecords:
    """Truth and detections of one evaluated image, in COCO json form."""

    info: dict[str, Any]
    gt: list[dict[str, Any]]
    segm: list[dict[str, Any]]
    bbox: list[dict[str, Any]]
    counts: tuple[int, int, int, int]
    ratios: list[float]
    kind: str | None


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


def greedy_matches(
    proposals: Sequence[dict[str, Any]],
    truth: Sequence[dict[str, Any]],
    *,
    min_iou: float = EDIT_IOU,
) -> list[tuple[int, int, float]]:
    """(proposal index, truth index, mask IoU) of each proposal matched at ``min_iou`` or more.

    ``proposals`` and ``truth`` are dicts with an RLE ``segmentation`` and ``category_id``
    (proposals also ``score``). Proposals are matched greedily by descending score to the
    unmatched same-category truth instance of highest mask IoU.
    """
    if not proposals or not truth:
        return []
    order = sorted(range(len(proposals)), key=lambda i: -proposals[i]["score"])
    ious = np.asarray(
        mask_utils.iou(
            [proposals[i]["segmentation"] for i in order],
            [t["segmentation"] for t in truth],
            [0] * len(truth),
        )
    ).reshape(len(order), len(truth))
    same_cat = np.array(
        [[proposals[i]["category_id"] == t["category_id"] for t in truth] for i in order],
        dtype=bool,
    ).reshape(len(order), len(truth))
    matched = np.zeros(len(truth), dtype=bool)
    out = []
    for row, i in enumerate(order):
        candidates = np.where(same_cat[row] & ~matched, ious[row], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= min_iou:
            matched[best] = True
            out.append((i, best, float(candidates[best])))
    return out


def reviewer_counts(
    proposals: Sequence[dict[str, Any]],
    truth: Sequence[dict[str, Any]],
    *,
    accept_iou: float = ACCEPT_IOU,
    edit_iou: float = EDIT_IOU,
) -> tuple[int, int, int, int]:
    """(accepted, edited, rejected, missed) for one image (matching: :func:`greedy_matches`)."""
    matches = greedy_matches(proposals, truth, min_iou=edit_iou)
    accepted = sum(1 for _, _, iou in matches if iou >= accept_iou)
    edited = len(matches) - accepted
    return accepted, edited, len(proposals) - len(matches), len(truth) - len(matches)


def _truth_records(image_id: int, ev: EvalImage, first_ann_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": first_ann_id + k,
            "image_id": image_id,
            "category_id": label,
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": mask_utils.toBbox(rle).tolist(),
            "iscrowd": crowd,
        }
        for k, (rle, label, crowd) in enumerate(zip(ev.truth, ev.labels, ev.iscrowd, strict=True))
    ]


def _instance_records(
    image_id: int, instances: Sequence[Instance], labels: dict[int, int], height: int, width: int
) -> list[dict[str, Any]]:
    """The proposals' polygons rasterised as the store shows them, as COCO results."""
    out = []
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    for inst in instances:
        crop, x0, y0 = polygons_to_mask_crop(inst.polygons, height, width)
        if not crop.any():
            continue
        full[:] = 0
        full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        rle = mask_utils.encode(full)
        out.append(
            {
                "image_id": image_id,
                "category_id": labels[inst.category_id],
                "segmentation": rle,
                "score": float(inst.score if inst.score is not None else 1.0),
            }
        )
    return out


def evaluate_predictor(
    predictor: Predictor,
    images: Iterable[EvalImage],
    *,
    max_dets: int = DEFAULT_MAX_DETS,
    proposal_score: float = DEFAULT_PROPOSAL_SCORE,
    accept_iou: float = ACCEPT_IOU,
    edit_iou: float = EDIT_IOU,
) -> EvalResult:
    """Run ``predictor`` on every image and score its instances like COCOeval.

    AP uses every instance the predictor returns (build it with ``score_threshold``
    :data:`AP_SCORE_FLOOR` for the whole precision/recall curve), up to ``max_dets`` per
    image; reviewer counts and the area ratio use the proposals scoring at least
    ``proposal_score`` and ignore crowd regions. Images with a ``kind`` are also summed up
    per kind.
    """
    labels = {c.id: k for k, c in enumerate(predictor.card.categories, start=1)}
    records: list[_ImageRecords] = []
    first_ann = 1
    for index, ev in enumerate(images):
        image_id = index + 1
        height, width = np.asarray(ev.image).shape[:2]
        truth = _truth_records(image_id, ev, first_ann)
        first_ann += len(truth)
        preds = _instance_records(
            image_id, predictor.predict(ev.image), labels, height, width
        )
        shown = [p for p in preds if p["score"] >= proposal_score]
        plain = [t for t in truth if not t["iscrowd"]]
        matches = greedy_matches(shown, plain, min_iou=edit_iou)
        accepted = sum(1 for _, _, iou in matches if iou >= accept_iou)
        records.append(
            _ImageRecords(
                info={"id": image_id, "height": int(height), "width": int(width)},
                gt=truth,
                segm=preds,
                bbox=[
                    {**{k: p[k] for k in ("image_id", "category_id", "score")},
                     "bbox": mask_utils.toBbox(p["segmentation"]).tolist()}
                    for p in preds
                ],
                counts=(
                    accepted,
                    len(matches) - accepted,
                    len(shown) - len(matches),
                    len(plain) - len(matches),
                ),
                ratios=[
                    float(mask_utils.area(shown[i]["segmentation"]) / plain[j]["area"])
                    for i, j, _ in matches
                ],
                kind=ev.kind,
            )
        )
    if not records:
        raise EvaluationError(
            "No images to evaluate: mark annotated images done, or pass a COCO file or "
            "label maps."
        )
    reviewer = (proposal_score, accept_iou, edit_iou)
    result = _summarise(records, max_dets, reviewer)
    kinds = sorted({r.kind for r in records if r.kind is not None})
    if kinds:
        per_kind = {k: _summarise([r for r in records if r.kind == k], max_dets, reviewer) for k in kinds}
        result = dataclasses.replace(result, per_kind=per_kind)
    log.info(
        "evaluated %d images: segm AP %.3f AP50 %.3f (maxDets=%d)",
        result.images,
        result.segm.ap,
        result.segm.ap50,
        max_dets,
    )
    return result


def _summarise(
    records: Sequence[_ImageRecords], max_dets: int, reviewer: tuple[float, float, float]
) -> EvalResult:
    gt = {
        "images": [r.info for r in records],
        "annotations": [t for r in records for t in r.gt],
        "categories": [
            {"id": c, "name": str(c)}
            for c in sorted(
                {t["category_id"] for r in records for t in r.gt}
                | {p["category_id"] for r in records for p in r.segm}
            )
        ],
    }
    metrics = {
        iou_type: coco_metrics(
            gt, [d for r in records for d in getattr(r, iou_type)], iou_type, max_dets=max_dets
        )
        for iou_type in IOU_TYPES
    }
    counts = np.sum([r.counts for r in records], axis=0).astype(int).tolist()
    return EvalResult(
        segm=metrics["segm"],
        bbox=metrics["bbox"],
        reviewer=ReviewerCounts(*counts, *reviewer),
        max_dets=max_dets,
        images=len(records),
        instances=sum(1 for t in gt["annotations"] if not t["iscrowd"]),
        detections=sum(len(r.segm) for r in records),
        area_ratio=AreaRatio.of([x for r in records for x in r.ratios]),
    )


def evaluate_model(
    model: nn.Module,
    card: ModelCard,
    images: Iterable[EvalImage],
    *,
    device: str | torch.device = "cpu",
    **options: Any,
) -> EvalResult:
    """:func:`evaluate_predictor` of ``model`` (described by ``card``) on ``images``, with
    every detection down to :data:`AP_SCORE_FLOOR`; the model itself is left as it was (the
    predictor works on a copy)."""
    predictor = Predictor.from_model(
        model, card, device=str(device), score_threshold=AP_SCORE_FLOOR
    )
    return evaluate_predictor(predictor, images, **options)
