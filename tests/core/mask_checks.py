"""Reference measures the geometry tests compare against (plain numpy, not the code under test)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.core.geometry import ring_area
from app.core.types import Polygon


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-shaped masks; 1.0 if both are empty."""
    ma, mb = np.asarray(a, bool), np.asarray(b, bool)
    assert ma.shape == mb.shape, f"masks of shapes {ma.shape} and {mb.shape}"
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 1.0


def polygons_area(polygons: Sequence[Polygon]) -> float:
    """Area in px^2: each exterior minus its holes, summed over parts."""
    return float(sum(ring_area(p.exterior) - sum(ring_area(h) for h in p.holes) for p in polygons))
