"""Mask R-CNN builders for the architectures a model card can name.

``build_model`` never downloads unless ``weights``/``weights_backbone`` name torchvision
weights explicitly; the zoo resolves card weights and calls it with ``weights=None`` for
weights files, so tests and the bundled model work offline.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import (
    MaskRCNN,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
    roi_heads,
)
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import roi_align

from app.errors import MaskLoopError

log = logging.getLogger(__name__)

ARCHITECTURES = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "maskrcnn_mobilenet_v3_fpn")

# The light CPU model: stride 8/16/32 features (+ pool),
# small anchors for 10-40 px nuclei, a narrow mask head and fewer sampled RoIs, because with
# dozens of instances per image the mask head dominates the cost.
MOBILE_RETURNED_LAYERS = [2, 3, 5]
MOBILE_ANCHOR_SIZES = ((8,), (16,), (32,), (64,))
MOBILE_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(MOBILE_ANCHOR_SIZES)
MOBILE_MASK_LAYERS = [64, 64, 64, 64]
MOBILE_BOX_REPRESENTATION = 256


class ModelBuildError(MaskLoopError):
    """The requested model cannot be built (unknown architecture or bad option)."""


class OverlapMatcher(Matcher):
    """The RPN's anchor matcher, minus low-quality matches at IoU 0.

    torchvision gives each ground-truth box every anchor tied at its best IoU. A box that no
    anchor overlaps (a nucleus a crop cut to a 1-4 px sliver along the bottom or right
    border, where anchors do not reach) ties at 0 with *every* anchor, so the whole image's
    anchors are trained to regress onto that sliver: the RPN losses of such a batch jump
    ~50x and drown the real gradient. Here such a box simply gets no anchor.
    """

    def set_low_quality_matches_(
        self, matches: torch.Tensor, all_matches: torch.Tensor, match_quality_matrix: torch.Tensor
    ) -> None:
        highest = match_quality_matrix.max(dim=1).values[:, None]
        _, anchors = torch.where((match_quality_matrix == highest) & (highest > 0))
        matches[anchors] = all_matches[anchors]


def box_mask_targets(
    gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idxs: torch.Tensor, size: int
) -> torch.Tensor:
    """Mask-head targets: each ground-truth mask sampled over exactly its box.

    Boxes are continuous pixel coordinates (pixel k covers [k, k+1]; a mask's box is
    [first pixel, last pixel + 1], as ``dataset.masks_to_boxes`` makes it). torchvision's
    ``project_masks_on_boxes`` samples with ``aligned=False``, i.e. half a pixel right and
    down of the box, and its paste stretches the mask over one pixel more than the box: a
    10-20 px nucleus came out 10-25 % too large. Training on aligned targets and pasting
    onto the same box (:func:`app.ml.predictor.masks_in_boxes`) makes a mask fit its object.
    """
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0, aligned=True)[:, 0]


# maskrcnn_loss looks the target function up at call time: every Mask R-CNN trained by
# MaskLoop learns the box convention above (one convention for training and prediction).
roi_heads.project_masks_on_boxes = box_mask_targets


# The box a person drags is not the detector's box. Training also shows the mask head each
# ground-truth box moved like a drag (every side by up to PROMPT_BOX_JITTER of the box's
# size, uniform) and then widened by PROMPT_BOX_MARGIN on every side; an assist widens the
# box it is given by the same margin, so a drag that cuts into the object still yields all
# of it (a mask never reaches past its box).
PROMPT_BOX_JITTER = 0.15
PROMPT_BOX_MARGIN = 0.2
# Loose boxes per training image: the mask head costs about as much again as for its
# sampled positives (torchvision samples at most 25 % of 128 RoIs as positives).
LOOSE_BOXES_PER_IMAGE = 16


def widen_boxes(boxes: torch.Tensor, margin: float = PROMPT_BOX_MARGIN) -> torch.Tensor:
    """``boxes`` (N, 4; x0, y0, x1, y1) grown by ``margin`` times their width/height on
    each side: the box an assist prompts the mask head with."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + margin * size * boxes.new_tensor([-1.0, -1.0, 1.0, 1.0])


def loose_boxes(
    boxes: torch.Tensor,
    *,
    jitter: float = PROMPT_BOX_JITTER,
    margin: float = PROMPT_BOX_MARGIN,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``boxes`` with each side moved by up to ``jitter`` of the box's size (uniform), then
    widened by ``margin``: ground-truth boxes as an assist's prompt would give them."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    shift = torch.rand(boxes.shape, generator=generator, device="cpu").to(boxes) * 2 - 1
    return widen_boxes(boxes + shift * jitter * size, margin)


def loose_box_mask_loss(
    heads: roi_heads.RoIHeads,
    features: dict[str, torch.Tensor],
    image_shapes: list[tuple[int, int]],
    targets: list[dict[str, torch.Tensor]],
    per_image: int = LOOSE_BOXES_PER_IMAGE,
) -> torch.Tensor:
    """The mask loss of up to ``per_image`` random ground-truth objects per image, each
    predicted from its :func:`loose_boxes` box (targets sampled over that same box).

    The draws are seeded by each image's boxes and the training iteration
    (:func:`set_training_iteration`), not by the global random stream: an image gets the
    same loose boxes whether it is trained in one process or on one rank of several (DDP
    gives the single-process update), and a resumed run the same as an uninterrupted one."""
    step = getattr(heads, "_loose_box_iteration", 0)
    boxes, matched = [], []
    for target, (h, w) in zip(targets, image_shapes, strict=True):
        gt = target["boxes"]
        key = zlib.crc32(gt.detach().round().to(torch.int64).cpu().numpy().tobytes())
        gen = torch.Generator().manual_seed(key + 1_000_003 * step)
        pick = torch.randperm(len(gt), generator=gen)[:per_image].to(gt.device)
        b = loose_boxes(gt[pick], generator=gen)
        b[:, 0::2] = b[:, 0::2].clamp(0, w)
        b[:, 1::2] = b[:, 1::2].clamp(0, h)
        boxes.append(b)
        matched.append(pick)
    if not sum(len(b) for b in boxes):
        return sum(p.sum() for p in heads.mask_predictor.parameters()) * 0.0
    logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, boxes, image_shapes)))
    return roi_heads.maskrcnn_loss(
        logits, boxes, [t["masks"] for t in targets], [t["labels"] for t in targets], matched
    )


def set_training_iteration(model: nn.Module, iteration: int) -> None:
    """Tell ``model`` (a MaskLoop Mask R-CNN, maybe DDP-wrapped) which training iteration
    the next forward pass is; it seeds the loose-box draws."""
    inner = getattr(model, "module", model)
    heads = getattr(inner, "roi_heads", None)
    if heads is not None:
        heads._loose_box_iteration = iteration


def _add_loose_box_loss(
    heads: roi_heads.RoIHeads, args: tuple, output: tuple
) -> tuple | None:
    """Forward hook of ``roi_heads``: in training, adds ``loss_mask_loose``."""
    if not heads.training or not heads.has_mask():
        return None
    features, _proposals, image_shapes, targets = args
    result, losses = output
    losses["loss_mask_loose"] = loose_box_mask_loss(heads, features, image_shapes, targets)
    return result, losses


def _training_rules(model: MaskRCNN) -> MaskRCNN:
    """MaskLoop's training rules on a torchvision Mask R-CNN: the RPN matcher above and the
    loose-box mask loss (:func:`loose_box_mask_loss`)."""
    old = model.rpn.proposal_matcher
    model.rpn.proposal_matcher = OverlapMatcher(
        old.high_threshold, old.low_threshold, allow_low_quality_matches=True
    )
    model.roi_heads.register_forward_hook(_add_loose_box_loss)
    return model


def build_model(
    architecture: str,
    *,
    num_classes: int,
    min_size: int = 800,
    max_size: int = 1333,
    detections_per_img: int = 300,
    rpn_proposals: int | None = None,
    nms_iou: float | None = None,
    weights: str | None = None,
    weights_backbone: str | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Build a Mask R-CNN; ``num_classes`` counts the background.

    ``rpn_proposals`` (region proposals kept per image at inference, before and after the
    RPN's NMS) and ``nms_iou`` (box NMS) default to torchvision's 1000 and 0.5 when None.

    ``weights``/``weights_backbone`` are torchvision enum names (e.g.
    ``"MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1"``); None means random initialisation. When
    pretrained detection weights have a different class count, the heads are replaced.
    Extra ``kwargs`` go to ``MaskRCNN`` (e.g. ``rpn_post_nms_top_n_test``).
    """
    if architecture not in ARCHITECTURES:
        raise ModelBuildError(
            f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
        )
    if num_classes < 2:
        raise ModelBuildError(
            f"num_classes={num_classes}: it counts the background, so it must be at least 2."
        )
    if rpn_proposals is not None:
        kwargs.update(rpn_pre_nms_top_n_test=rpn_proposals, rpn_post_nms_top_n_test=rpn_proposals)
    if nms_iou is not None:
        kwargs["box_nms_thresh"] = nms_iou
    common = dict(
        min_size=min_size, max_size=max_size, box_detections_per_img=detections_per_img, **kwargs
    )
    if architecture == "maskrcnn_mobilenet_v3_fpn":
        if weights is not None:
            raise ModelBuildError(
                "maskrcnn_mobilenet_v3_fpn has no torchvision detection weights; "
                "use a weights file (model card) or weights=None."
            )
        return _training_rules(_build_mobile(num_classes, weights_backbone, common))
    builder = (
        maskrcnn_resnet50_fpn
        if architecture == "maskrcnn_resnet50_fpn"
        else maskrcnn_resnet50_fpn_v2
    )
    if weights is None:
        return _training_rules(
            builder(
                weights=None, weights_backbone=weights_backbone, num_classes=num_classes, **common
            )
        )
    model = builder(weights=weights, weights_backbone=None, **common)
    if model.roi_heads.box_predictor.cls_score.out_features != num_classes:
        replace_heads(model, num_classes)
    return _training_rules(model)


def _build_mobile(
    num_classes: int, weights_backbone: str | None, common: dict[str, Any]
) -> MaskRCNN:
    # Trainable BatchNorm: FrozenBatchNorm2d (torchvision's default) stays at identity when
    # training from scratch, which cripples the network.
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=weights_backbone,
        fpn=True,
        trainable_layers=6,
        returned_layers=MOBILE_RETURNED_LAYERS,
        norm_layer=nn.BatchNorm2d,
    )
    options: dict[str, Any] = dict(
        rpn_anchor_generator=AnchorGenerator(MOBILE_ANCHOR_SIZES, MOBILE_ASPECT_RATIOS),
        mask_head=MaskRCNNHeads(backbone.out_channels, MOBILE_MASK_LAYERS, 1),
        mask_predictor=MaskRCNNPredictor(
            MOBILE_MASK_LAYERS[-1], MOBILE_MASK_LAYERS[-1], num_classes
        ),
        # A 256-wide box head instead of 1024: the default's 13M parameters would be two
        # thirds of the model and push the bundled weights past 25 MB. MaskRCNN refuses
        # num_classes together with a custom mask predictor, so both predictors are given.
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, MOBILE_BOX_REPRESENTATION),
        box_predictor=FastRCNNPredictor(MOBILE_BOX_REPRESENTATION, num_classes),
        box_batch_size_per_image=128,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
    )
    options.update(common)
    return MaskRCNN(backbone, num_classes=None, **options)


def replace_heads(model: MaskRCNN, num_classes: int) -> None:
    """Give ``model`` fresh box and mask predictors for ``num_classes`` (background included).

    Used to fine-tune a model on a different category set; the backbone, RPN and the
    heads' feature layers keep their weights.
    """
    old_box = model.roi_heads.box_predictor
    old_mask = model.roi_heads.mask_predictor
    device = old_box.cls_score.weight.device
    model.roi_heads.box_predictor = FastRCNNPredictor(old_box.cls_score.in_features, num_classes)
    model.roi_heads.mask_predictor = MaskRCNNPredictor(
        old_mask.conv5_mask.in_channels, old_mask.conv5_mask.out_channels, num_classes
    )
    model.roi_heads.box_predictor.to(device)
    model.roi_heads.mask_predictor.to(device)
    log.info("replaced box and mask predictors for %d classes", num_classes)
