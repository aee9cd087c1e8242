"""Image in, instances (polygons in image pixels) out: the model half of the annotation loop.

Why not just ``model(image)``: torchvision then pastes every detection's 28x28 mask into a
full-size image (N x H x W floats), which costs more than the contours drawn from it and,
on a 6,000 px slide with hundreds of objects, more memory than a machine has. Here the
model's stages are called directly, detections are thresholded first, and each mask is
resized only to its own box (exactly as torchvision's paste does it, so the pixels agree)
before :func:`app.core.geometry.mask_to_polygons` turns it into polygons. Large images are
cut into overlapping tiles (:mod:`app.ml.tiling`) and objects cut by tile borders merged.

A prediction's backbone features are what a model assist on the same image needs
(:mod:`app.ml.assist`); :meth:`Predictor.feature_sink` hands them to a caller instead of
letting them go, so an assist after a proposal pass runs no backbone of its own.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops.misc import FrozenBatchNorm2d

from app.core.geometry import DEFAULT_MIN_AREA, DEFAULT_TOLERANCE, mask_to_polygons
from app.core.types import Instance, Source
from app.errors import MaskLoopError
from app.ml.devices import device_from_arg
from app.ml.precision import Precision, precision_name, reduce_precision, resolve_dtype
from app.ml.preprocess import InputSpec, image_spec, to_model_input
from app.ml.roi_pool import use_row_roi_align
from app.ml.tiling import MaskCrop, Tile, merge_tile_crops, tile_grid
from app.ml.zoo import ModelCard, load_model

log = logging.getLogger(__name__)

# torchvision's box NMS threshold, used when a card does not set its own.
DEFAULT_NMS_IOU = 0.5
DEFAULT_TILE_OVERLAP = 128
# Percentiles of huge images are estimated on at most this many samples (as in preprocess).
_RANGE_SAMPLES = 1 << 22


class PredictionCancelled(MaskLoopError):
    """Prediction was stopped by its caller (``should_stop`` returned True)."""


@dataclass
class RawDetections:
    """One image's detections before masks become polygons (boxes in input pixels)."""

    boxes: torch.Tensor  # (N, 4) float32 XYXY
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) model labels, 1-based
    masks: torch.Tensor  # (N, 1, M, M) float32 probabilities


@dataclass(frozen=True)
class WindowPass:
    """The model's view of one window of an image during a prediction: the converted,
    resized and padded input and its backbone features, on the predictor's device."""

    image: int  # index of the image in the predict_batch call (0 for predict)
    image_shape: tuple[int, int]  # (height, width) of the whole image
    window: Tile  # the image itself, or one of its tiles
    spec: InputSpec  # the intensity conversion the window went through
    images: ImageList  # a batch of one
    features: dict[str, torch.Tensor]


FeatureSink = Callable[[WindowPass], None]


@dataclass(frozen=True)
class _Job:
    """A piece of work for the model: a whole image or one tile of it."""

    image: int
    tile_index: int
    tile: Tile


class Predictor:
    """Runs a model card's Mask R-CNN on images and returns ``source=model`` instances.

    ``device``: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    ``precision``: "auto" runs the convolutional parts in bf16 on CUDA (fp16 on GPUs without
    bf16) and float32 elsewhere; "fp32", "bf16" or "fp16" force it (:mod:`app.ml.precision`:
    box regression always stays float32). ``score_threshold``,
    ``nms_iou`` and ``max_detections`` configure the detector (the last two default to the
    card's ``nms_iou``, else 0.5, and ``detections_per_img``); images whose longer side
    exceeds ``tile_size`` (default: the card's ``max_size``) are tiled with ``tile_overlap``.
    Masks become outlines simplified by ``polygon_tolerance`` px, an attribute an annotation
    session may change between images.
    ``model`` is an already-built model (tests, right after training); by default the
    card's weights are loaded.
    """

    def __init__(
        self,
        card: ModelCard,
        *,
        device: str = "auto",
        precision: Precision | str = Precision.AUTO,
        score_threshold: float = 0.5,
        nms_iou: float | None = None,
        max_detections: int | None = None,
        tile_size: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        polygon_tolerance: float = DEFAULT_TOLERANCE,
        min_area: float = DEFAULT_MIN_AREA,
        model_version: int | None = None,
        batch_size: int | None = None,
        model: nn.Module | None = None,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise MaskLoopError(f"score threshold {score_threshold} must be between 0 and 1.")
        if nms_iou is None:
            nms_iou = card.nms_iou if card.nms_iou is not None else DEFAULT_NMS_IOU
        if not 0.0 < nms_iou <= 1.0:
            raise MaskLoopError(f"NMS IoU {nms_iou} must be above 0 and at most 1.")
        if max_detections is None:
            max_detections = card.detections_per_img
        if max_detections < 1:
            raise MaskLoopError(f"max detections {max_detections} must be at least 1.")
        self.card = card
        self.spec: InputSpec = card.input
        self.device = device_from_arg(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.model_version = model_version
        self.tile_size = tile_size or card.input.max_size
        self.tile_overlap = min(tile_overlap, self.tile_size // 2 - 1)
        self.polygon_tolerance = polygon_tolerance
        self.min_area = min_area
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else 8)
        # A given model is copied: the thresholds and inference-only folding below must not
        # change a model its owner goes on training.
        model = load_model(card, device="cpu") if model is None else copy.deepcopy(model)
        self.model = _prepare_model(model, self.device, self.dtype)
        heads = self.model.roi_heads
        heads.score_thresh = score_threshold
        heads.nms_thresh = nms_iou
        heads.detections_per_img = max_detections
        self.device_name = _describe(self.device, self.dtype)
        self._sink: FeatureSink | None = None
        log.info("predictor for %s on %s", card.id, self.device_name)

    @classmethod
    def from_model(cls, model: nn.Module, card: ModelCard, **options: object) -> Predictor:
        """A predictor around an already-built model (no weights are loaded)."""
        return cls(card, model=model, **options)  # type: ignore[arg-type]

    # -- public ------------------------------------------------------------------------------

    @contextmanager
    def feature_sink(self, sink: FeatureSink) -> Iterator[None]:
        """Within the block, ``predict``/``predict_batch`` pass every window they run
        to ``sink`` (a :class:`WindowPass`) instead of dropping its features; the
        predictions are unchanged. A window batched with others of a larger padded size
        is not passed: its features would differ from the window run alone."""
        before, self._sink = self._sink, sink
        try:
            yield
        finally:
            self._sink = before

    def predict(
        self, image: np.ndarray, *, should_stop: Callable[[], bool] | None = None
    ) -> list[Instance]:
        """Instances on ``image`` (HxW, HxWx1/3/4, any dtype), best score first."""
        return self.predict_batch([image], should_stop=should_stop)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], *, should_stop: Callable[[], bool] | None = None
    ) -> list[list[Instance]]:
        """Instances for each image; raises :class:`PredictionCancelled` between batches/tiles."""
        arrays = [np.asarray(im) for im in images]
        jobs: list[_Job] = []
        specs: list[InputSpec] = []
        tiles_of: list[list[Tile]] = []
        for i, arr in enumerate(arrays):
            h, w = arr.shape[:2]
            tiles = (
                tile_grid(w, h, self.tile_size, self.tile_overlap)
                if max(h, w) > self.tile_size
                else [Tile(0, 0, w, h)]
            )
            tiles_of.append(tiles)
            # Tiles must share one intensity mapping, or objects change at tile borders.
            specs.append(global_spec(arr, self.spec) if len(tiles) > 1 else self.spec)
            jobs += [_Job(i, k, t) for k, t in enumerate(tiles)]
        crops: list[list[MaskCrop]] = [[] for _ in arrays]
        for chunk in _chunks(jobs, self.batch_size):
            if should_stop is not None and should_stop():
                raise PredictionCancelled("prediction cancelled")
            tensors = [
                to_model_input(
                    arrays[j.image][j.tile.y0 : j.tile.y1, j.tile.x0 : j.tile.x1], specs[j.image]
                )
                for j in chunk
            ]
            if self._sink is None:
                raws = self.detect(tensors)
            else:
                raws, images, features = self._detect(tensors)
                self._pass_features(chunk, arrays, specs, images, features)
            for job, raw in zip(chunk, raws, strict=True):
                crops[job.image] += masks_in_boxes(
                    raw,
                    job.tile.height,
                    job.tile.width,
                    offset=(job.tile.x0, job.tile.y0),
                    tile=job.tile_index,
                )
        return [
            self._instances(merge_tile_crops(c, t) if len(t) > 1 else c)
            for c, t in zip(crops, tiles_of, strict=True)
        ]

    def detect(self, tensors: list[torch.Tensor]) -> list[RawDetections]:
        """Run the detector on (3, H, W) inputs; boxes come back in each input's pixels.

        The model's own stages are called so that torchvision's full-image mask paste
        (``transform.postprocess``) is skipped; everything else is the stock forward pass.
        """
        return self._detect(tensors)[0]

    # -- helpers -----------------------------------------------------------------------------

    def _detect(
        self, tensors: list[torch.Tensor]
    ) -> tuple[list[RawDetections], ImageList, dict[str, torch.Tensor]]:
        """:meth:`detect`, also returning the model input and backbone features."""
        model = self.model
        sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        with torch.inference_mode():
            batch = [t.to(self.device, non_blocking=True) for t in tensors]
            images, _ = model.transform(batch)
            x = images.tensors
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            features = model.backbone(x)
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        out = []
        for det, resized, original in zip(detections, images.image_sizes, sizes, strict=True):
            boxes = resize_boxes(det["boxes"].float(), resized, original).cpu()
            out.append(
                RawDetections(
                    boxes=boxes,
                    scores=det["scores"].float().cpu().numpy(),
                    labels=det["labels"].cpu().numpy(),
                    masks=det["masks"].float().cpu(),
                )
            )
        return out, images, features

    def _pass_features(
        self,
        chunk: list[_Job],
        arrays: list[np.ndarray],
        specs: list[InputSpec],
        images: ImageList,
        features: dict[str, torch.Tensor],
    ) -> None:
        """Hand each job's window to the sink as if it had been run alone."""
        assert self._sink is not None
        padded = tuple(images.tensors.shape[-2:])
        divisor = self.model.transform.size_divisible
        for k, job in enumerate(chunk):
            size = images.image_sizes[k]
            if len(chunk) == 1:
                one, feats = images.tensors, features
            elif tuple(math.ceil(s / divisor) * divisor for s in size) == padded:
                # Copies: a slice would keep the whole batch's memory alive.
                one = images.tensors[k : k + 1].clone()
                feats = {name: f[k : k + 1].clone() for name, f in features.items()}
            else:
                continue
            h, w = arrays[job.image].shape[:2]
            self._sink(
                WindowPass(
                    job.image, (h, w), job.tile, specs[job.image], ImageList(one, [size]), feats
                )
            )

    def _instances(self, crops: list[MaskCrop]) -> list[Instance]:
        out = []
        tolerance = self.polygon_tolerance  # once: a change reaches the next image whole
        for crop in sorted(crops, key=lambda c: -c.score):
            polygons = mask_to_polygons(
                crop.mask,
                tolerance=tolerance,
                min_area=self.min_area,
                offset=(crop.x0, crop.y0),
            )
            if not polygons:
                continue
            out.append(
                Instance(
                    category_id=self.card.category_for_label(crop.label).id,
                    polygons=polygons,
                    score=round(float(crop.score), 6),
                    source=Source.MODEL,
                    model_version=self.model_version,
                )
            )
        return out


def masks_in_boxes(
    raw: RawDetections,
    height: int,
    width: int,
    *,
    offset: tuple[int, int] = (0, 0),
    tile: int = 0,
) -> list[MaskCrop]:
    """Each detection's mask resampled onto exactly its box and thresholded at 0.5.

    The M x M mask covers the box [x0, x1] x [y0, y1] in continuous pixel coordinates, the
    convention the mask head is trained on (:func:`app.ml.models.box_mask_targets`); a pixel
    is in when the bilinear probability at its centre exceeds 0.5. Only the box's pixels
    are computed. ``offset`` moves the crops from tile to image coordinates.
    """
    if not len(raw.scores):
        return []
    probs = raw.masks[:, 0].numpy()
    size = probs.shape[-1]
    crops = []
    for prob, (bx0, by0, bx1, by1), score, label in zip(
        probs, raw.boxes.numpy().astype(np.float64), raw.scores, raw.labels, strict=True
    ):
        sx, sy = (bx1 - bx0) / size, (by1 - by0) / size
        x0, x1 = max(math.floor(bx0), 0), min(math.ceil(bx1), width)
        y0, y1 = max(math.floor(by0), 0), min(math.ceil(by1), height)
        if x1 <= x0 or y1 <= y0 or sx <= 0 or sy <= 0:
            continue
        # Crop pixel (c, r) has its centre at image (x0 + c + 0.5, y0 + r + 0.5), which is
        # mask index ((x0 + c + 0.5 - bx0) / sx - 0.5, ...) (mask cell i centred at i + 0.5).
        to_mask = np.array(
            [[1 / sx, 0, (x0 + 0.5 - bx0) / sx - 0.5], [0, 1 / sy, (y0 + 0.5 - by0) / sy - 0.5]]
        )
        sampled = cv2.warpAffine(
            prob,
            to_mask,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
        mask = sampled > 0.5
        if not mask.any():
            continue
        crops.append(MaskCrop(x0 + offset[0], y0 + offset[1], mask, float(score), int(label), tile))
    return crops


def global_spec(image: np.ndarray, spec: InputSpec) -> InputSpec:
    """``spec`` with the image-wide intensity range and inversion fixed, so every tile maps
    alike: :func:`app.ml.preprocess.image_spec` on an evenly strided sample of the whole
    image (large slides are not converted to float in full).
    """
    arr = np.asarray(image)
    step = max(1, int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / _RANGE_SAMPLES))))
    return image_spec(arr[::step, ::step], spec)


def _chunks(items: list[_Job], size: int) -> Iterator[list[_Job]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _prepare_model(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    model.eval()
    # Inference-only, same weights: batch norms folded into the preceding convolutions
    # (before any cast to a low precision, which then rounds each weight once).
    fold_batchnorm(model)
    if device.type == "cpu":
        # Channels-last memory for oneDNN's fast convolutions, and RoIAlign that gathers
        # the channels-last feature rows instead of torchvision's scalar loop.
        model.to(memory_format=torch.channels_last)
        use_row_roi_align(model)
        _limit_threads()
    reduce_precision(model, dtype)
    return model.to(device)


def usable_cores() -> int:
    """The CPU cores this process may run on (the host's count overstates it in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _limit_threads() -> None:
    """Use the cores this process may run on (torch counts the host's in containers)."""
    available = usable_cores()
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold eval-mode batch norms into the convolution before them; returns how many.

    Covers torchvision's ResNet (``convK``/``bnK`` pairs, ``downsample``) and the
    ``Conv2d, BatchNorm2d, ...`` sequences of MobileNet. Only for inference.
    """
    folded = 0
    for module in list(model.modules()):
        children = dict(module.named_children())
        pairs = [(f"conv{k}", f"bn{k}") for k in range(1, 4)]
        names = list(children)
        pairs += [
            (a, b)
            for a, b in zip(names, names[1:], strict=False)
            if isinstance(module, nn.Sequential)
        ]
        for conv_name, bn_name in pairs:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, FrozenBatchNorm2d | nn.BatchNorm2d)
                and not (isinstance(bn, nn.BatchNorm2d) and bn.training)
            ):
                _fold(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.Module) -> None:
    conv.weight, conv.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )


def _describe(device: torch.device, dtype: torch.dtype) -> str:
    precision = precision_name(dtype)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, {precision})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads, {precision})"
    return f"{device.type} ({precision})"
