"""Active learning: which images should a person annotate next?

The score of an image is how unsure the model was about it, from its proposals:

    u(s)  = 1 - |2 s - 1|                 per detection with score s (1 at s = 0.5, 0 at 0 or 1)
    u_i   = (u(s_i) + b_i) / 2            when a boundary uncertainty b_i in [0, 1] is known
                                          (share of the instance's mask probabilities between
                                          0.25 and 0.75), else u_i = u(s_i)
    U     = mean of u_i over detections with s_i >= floor (default 0.05)

Detections below the display threshold count: a cell the model half-sees is exactly what a
person should look at. An image with no detection above the floor scores 0 (the model is
sure there is nothing; a person finds out at random-order cost).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus

DEFAULT_FLOOR = 0.05
# Images a person may still be asked to annotate.
CANDIDATE_STATUSES = (ImageStatus.NEW, ImageStatus.PROPOSED)


class Strategy(StrEnum):
    UNCERTAINTY = "uncertainty"
    RANDOM = "random"


def detection_uncertainty(scores: np.ndarray) -> np.ndarray:
    """Per-detection margin uncertainty u(s) = 1 - |2s - 1|."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return 1.0 - np.abs(2.0 * s - 1.0)


def boundary_uncertainty(mask_probabilities: np.ndarray) -> float:
    """Share of an instance's mask probabilities that are undecided (0.25 < p < 0.75)."""
    p = np.asarray(mask_probabilities, dtype=np.float32)
    if p.size == 0:
        return 0.0
    return float(np.count_nonzero((p > 0.25) & (p < 0.75)) / p.size)


def image_uncertainty(
    scores: Sequence[float] | np.ndarray,
    boundary: Sequence[float] | np.ndarray | None = None,
    *,
    floor: float = DEFAULT_FLOOR,
) -> float:
    """The image's uncertainty U in [0, 1] (formula in the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    keep = s >= floor
    if not keep.any():
        return 0.0
    u = detection_uncertainty(s[keep])
    if boundary is not None:
        b = np.asarray(boundary, dtype=np.float64)
        if b.shape != s.shape:
            raise ValueError("boundary needs one value per score")
        u = (u + np.clip(b[keep], 0.0, 1.0)) / 2.0
    return float(u.mean())


def next_images(
    store: ProjectStore, count: int, strategy: Strategy | str = Strategy.UNCERTAINTY, seed: int = 0
) -> list[ImageRecord]:
    """The ``count`` images to annotate next among those nobody has worked on.

    ``uncertainty``: most uncertain first; images not scored yet follow in path order.
    ``random``: a seeded shuffle (the baseline active learning is measured against).
    """
    candidates = store.images(status=CANDIDATE_STATUSES, order="uncertainty")
    if Strategy(strategy) is Strategy.RANDOM:
        random.Random(seed).shuffle(candidates)
    return candidates[: max(0, count)]
