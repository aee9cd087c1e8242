"""Names of the flat metrics a model version's card and the training events carry.

:meth:`app.ml.evaluate.EvalResult.to_metrics` writes them; the CLI, the Train dialog, the
model list and the versions table read them. Torch-free, so the GUI can use them.
"""

from __future__ import annotations

IOU_TYPES = ("segm", "bbox")  # masks, boxes
# The COCO average precisions of one IoU type (APMetrics.to_dict): IoU .50:.95, .50, .75,
# and by object area.
AP, AP50, AP75, AP_SMALL, AP_MEDIUM, AP_LARGE = "AP", "AP50", "AP75", "APs", "APm", "APl"
AP_NAMES = (AP, AP50, AP75, AP_SMALL, AP_MEDIUM, AP_LARGE)
REVIEWER_KINDS = ("accepted", "edited", "rejected", "missed")


def ap_key(iou_type: str, name: str) -> str:
    """The flat key of one AP figure, e.g. ``ap_key("segm", AP50) == "segm_AP50"``."""
    return f"{iou_type}_{name}"


def reviewer_key(kind: str) -> str:
    """The flat key of one reviewer count, e.g. ``reviewer_accepted``."""
    return f"reviewer_{kind}"


SEGM_AP = ap_key("segm", AP)
SEGM_AP50 = ap_key("segm", AP50)
SEGM_AP75 = ap_key("segm", AP75)
BBOX_AP = ap_key("bbox", AP)
BBOX_AP50 = ap_key("bbox", AP50)
MAX_DETS = "max_dets"  # the detections-per-image cap AP was read at
EVAL_IMAGES = "eval_images"
EVAL_INSTANCES = "eval_instances"
AREA_RATIO_MEDIAN = "area_ratio_median"
VAL_IMAGES = "val_images"  # validation images of the training run (maskloop train adds it)
