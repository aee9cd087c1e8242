"""Choices of COCO export and import, free of cv2/pycocotools so the CLI parser can list
them without loading the codecs."""

from __future__ import annotations

from enum import StrEnum


class Segmentation(StrEnum):
    """How export writes masks: ``auto`` = polygons, or RLE for instances with holes."""

    AUTO = "auto"
    POLYGON = "polygon"  # instances with holes are still written as RLE (with a warning)
    RLE = "rle"


class Crowd(StrEnum):
    """What import does with ``iscrowd: 1`` regions."""

    KEEP = "keep"  # as crowd regions: exported as such, no training target, kept for evaluation
    SKIP = "skip"
    IMPORT = "import"  # as ordinary instances
