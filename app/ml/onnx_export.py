"""A model version as an ONNX file plus a deploy card: MaskLoop's models outside PyTorch.

The graph is the Predictor's forward pass, not ``model(image)``: it takes the converted
image (3, H, W) at its own size, resizes it as torchvision's transform does in eager mode,
and returns boxes (in the input's pixels), scores, labels and each detection's raw M x M
mask probabilities. The full-image mask paste torchvision would add is left out; a
consumer pastes each mask onto exactly its box (:func:`app.ml.predictor.masks_in_boxes`,
the convention the mask head is trained on), which is cheaper and gives MaskLoop's pixels.

The deploy card beside the ``.onnx`` file (same name, ``.json``) says what a consumer must
do around the graph: the input conversion (the card's ``input`` block, applied by
:func:`app.ml.preprocess.to_model_input` in MaskLoop), the categories of the labels, the
thresholds and the output names. ``docs/examples/onnx_predict.py`` implements it with numpy
and onnxruntime only.

Exporting needs the ``onnx`` package (``pip install 'maskloop[export]'``); it uses
torch's TorchScript-based exporter (``dynamo=False``), the one torchvision's detection
models support.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, roi_align

from app import __version__
from app.core.atomic import write_atomic, write_json_atomic
from app.core.extras import require
from app.errors import MaskLoopError
from app.ml.active import DEFAULT_FLOOR
from app.ml.predictor import DEFAULT_NMS_IOU, DEFAULT_TILE_OVERLAP, fold_batchnorm
from app.ml.roi_pool import LevelRoIAlign
from app.ml.zoo import ModelCard, load_model, sha256_file

log = logging.getLogger(__name__)

CARD_FORMAT = "maskloop-onnx"
CARD_FORMAT_VERSION = 1
# RoiAlign with output_half_pixel (torchvision's aligned=False) needs opset 16.
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")
# Scores below this never leave the graph; a consumer thresholds higher (the card's
# ``thresholds.score``). It is the floor MaskLoop's uncertainty ranking reads.
SCORE_FLOOR = DEFAULT_FLOOR
DEFAULT_SCORE = 0.5
MASK_THRESHOLD = 0.5


class OnnxExportError(MaskLoopError):
    """A model could not be written as ONNX."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, element type, shape (names for dynamic axes)."""

    name: str
    dtype: str
    shape: list[int | str]
    description: str


@dataclass
class OnnxCard:
    """The deploy card: everything a consumer must do around the ONNX graph."""

    id: str
    title: str
    architecture: str
    onnx_file: str
    onnx_sha256: str
    categories: list[dict[str, Any]]
    input: dict[str, Any]
    thresholds: dict[str, float | int]
    tile_size: int
    tile_overlap: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    license: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    exported_with: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "format_version": CARD_FORMAT_VERSION,
            "id": self.id,
            "title": self.title,
            "architecture": self.architecture,
            "onnx": {
                "file": self.onnx_file,
                "sha256": self.onnx_sha256,
                "opset": OPSET,
                "inputs": [asdict(t) for t in self.inputs],
                "outputs": [asdict(t) for t in self.outputs],
            },
            "categories": self.categories,
            "input": self.input,
            "resize": (
                "inside the graph: the converted image is scaled by min(min_size / shorter "
                "side, max_size / longer side) (bilinear); boxes come back in the input's pixels"
            ),
            "thresholds": self.thresholds,
            "mask_paste": (
                "each M x M mask covers its box [x0, x1] x [y0, y1] in continuous pixel "
                "coordinates (pixel k spans [k, k+1]); a pixel is in the object when the "
                "bilinear probability at its centre exceeds thresholds.mask"
            ),
            "tiling": (
                f"MaskLoop cuts images whose longer side exceeds tile_size ({self.tile_size} "
                f"px) into tiles overlapping by tile_overlap ({self.tile_overlap} px), "
                "converting every tile with the whole image's intensity range"
            ),
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "license": self.license,
            "metrics": self.metrics,
            "exported_with": self.exported_with,
        }


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    onnx_path: Path
    card_path: Path
    card: OnnxCard
    seconds: float


def card_path_for(onnx_path: Path | str) -> Path:
    """The deploy card's path: the ONNX file's name with ``.json``."""
    onnx_path = Path(onnx_path)
    if onnx_path.suffix.lower() != ".onnx":
        raise OnnxExportError(f"{onnx_path}: give the ONNX file a name ending in .onnx")
    return onnx_path.with_suffix(".json")


class DetectionGraph(nn.Module):
    """The exported forward pass: converted image in, boxes/scores/labels/mask probabilities out.

    The resize is written out here instead of using ``model.transform``: traced,
    torchvision's transform computes the output size in float32 (a 347 px side scaled to
    512 comes out 512 instead of eager mode's 511), so the ONNX model would see other
    pixels than the Predictor. Here the size is computed in float64 and floored, as eager
    ``interpolate`` does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        transform = model.transform
        self.register_buffer(
            "limits",
            torch.tensor(
                [float(transform.min_size[-1]), float(transform.max_size)], dtype=torch.float64
            ),
            persistent=False,
        )

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        transform = model.transform
        original = image.shape[-2:]
        x = transform.normalize(image)
        hw = torch._shape_as_tensor(x)[-2:]
        sides = hw.to(torch.float64)
        scale = (self.limits / torch.stack([sides.min(), sides.max()])).min()
        size = torch.floor(sides * scale).to(torch.int64)
        x = F.interpolate(x[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)
        resized = x.shape[-2:]
        batch = transform.batch_images([x[0]], size_divisible=transform.size_divisible)
        images = ImageList(batch, [(resized[0], resized[1])])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        det = detections[0]
        boxes = resize_boxes(det["boxes"], images.image_sizes[0], original)
        return boxes, det["scores"], det["labels"], det["masks"]


class GatherRoIAlign(LevelRoIAlign):
    """``MultiScaleRoIAlign`` (same levels, same ``roi_align``) whose per-level results are
    put back in box order by one gather.

    Traced, torchvision's pooler writes each level's results into a zero tensor with a
    scatter of every pooled value (ONNX ScatterElements with expanded indices), which took
    40 % of the exported model's CPU time in onnxruntime; a gather of whole rows is cheap.
    """

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features, rois, size = self._inputs(x, boxes, image_shapes)
        if len(features) == 1:
            return roi_align(features[0], rois, size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        pooled, where = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            index = torch.where(levels == level)[0]
            pooled.append(roi_align(feature, rois[index], size, scale, self.sampling_ratio))
            where.append(index)
        return torch.cat(pooled)[torch.argsort(torch.cat(where))]


def use_gather_roi_align(model: nn.Module) -> None:
    """Swap a Mask R-CNN's box and mask poolers for :class:`GatherRoIAlign`."""
    heads = model.roi_heads
    for name in ("box_roi_pool", "mask_roi_pool"):
        pool = getattr(heads, name, None)
        if type(pool) is MultiScaleRoIAlign:
            setattr(heads, name, GatherRoIAlign.like(pool))


def model_for_export(card: ModelCard) -> nn.Module:
    """``card``'s model ready to trace: eval mode, batch norms folded, poolers that export
    to fast ONNX, the graph's thresholds."""
    model = load_model(card, device="cpu")
    fold_batchnorm(model)
    use_gather_roi_align(model)
    heads = model.roi_heads
    heads.score_thresh = SCORE_FLOOR
    heads.nms_thresh = card.nms_iou if card.nms_iou is not None else DEFAULT_NMS_IOU
    heads.detections_per_img = card.detections_per_img
    return model.eval()


def trace_input(height: int = 256, width: int = 320) -> Tensor:
    """A deterministic image of bright discs on a dark ground for the tracer (any model)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.full((height, width), 0.1, dtype=np.float32)
    for cy, cx, r in ((60, 70, 14), (150, 200, 20), (200, 90, 10), (90, 260, 16)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 0.9
    return torch.from_numpy(np.repeat(image[None], 3, axis=0))


def _tensor_infos(card: ModelCard) -> tuple[list[TensorInfo], list[TensorInfo]]:
    inputs = [
        TensorInfo(
            INPUT_NAME,
            "float32",
            [3, "height", "width"],
            "the image converted as the card's input block says, values in [0, 1], "
            "channels first, at its own size (grey repeated to 3 channels)",
        )
    ]
    outputs = [
        TensorInfo("boxes", "float32", ["detections", 4], "x0, y0, x1, y1 in input pixels"),
        TensorInfo("scores", "float32", ["detections"], "best first"),
        TensorInfo("labels", "int64", ["detections"], "1-based: label k is categories[k - 1]"),
        TensorInfo(
            "masks",
            "float32",
            ["detections", 1, "mask_size", "mask_size"],
            "probabilities of each detection's mask over its box (see mask_paste)",
        ),
    ]
    return inputs, outputs


def _trace_to(graph: nn.Module, example: Tensor, path: Path) -> None:
    dynamic = {INPUT_NAME: {1: "height", 2: "width"}}
    dynamic.update({name: {0: "detections"} for name in OUTPUT_NAMES})
    with warnings.catch_warnings():
        # The tracer's notes on Python values (sizes it records as constants where the
        # graph does not depend on them) and the legacy exporter's deprecation notice.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def export_onnx(card: ModelCard, onnx_path: Path | str) -> OnnxExport:
    """Write ``card``'s model to ``onnx_path`` and its deploy card beside it.

    Both files are written atomically; the ONNX file is checked by ``onnx.checker`` before
    it replaces anything. Raises :class:`app.core.extras.MissingExtraError` without the
    ``onnx`` package (the ``export`` extra), :class:`OnnxExportError` when the model cannot
    be exported.
    """
    onnx_path = Path(onnx_path)
    card_path = card_path_for(onnx_path)
    onnx = require("onnx", feature="Exporting a model as ONNX")
    started = time.perf_counter()
    graph = DetectionGraph(model_for_export(card)).eval()

    def write(tmp: Path) -> None:
        try:
            _trace_to(graph, trace_input(), tmp)
            onnx.checker.check_model(str(tmp))
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            raise OnnxExportError(
                f"could not export model {card.id} ({card.architecture}) as ONNX: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(onnx_path, write)
    inputs, outputs = _tensor_infos(card)
    deploy = OnnxCard(
        id=card.id,
        title=card.title,
        architecture=card.architecture,
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        categories=[
            {"label": k, "id": c.id, "name": c.name} for k, c in enumerate(card.categories, 1)
        ],
        input=card.input.to_dict(),
        thresholds={
            "score": DEFAULT_SCORE,
            "score_floor": SCORE_FLOOR,
            "mask": MASK_THRESHOLD,
            "nms_iou": card.nms_iou if card.nms_iou is not None else DEFAULT_NMS_IOU,
            "detections_per_img": card.detections_per_img,
        },
        tile_size=card.input.max_size,
        tile_overlap=DEFAULT_TILE_OVERLAP,
        inputs=inputs,
        outputs=outputs,
        license=card.license,
        metrics=dict(card.metrics),
        exported_with={
            "maskloop": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
        },
    )
    write_json_atomic(card_path, deploy.to_dict(), indent=2)
    seconds = time.perf_counter() - started
    log.info("exported %s to %s in %.1f s", card.id, onnx_path, seconds)
    return OnnxExport(onnx_path, card_path, deploy, seconds)
