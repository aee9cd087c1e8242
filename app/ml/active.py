"""Active learning: which images should a person annotate next?

The score of an image is the number of corrections its review is expected to need, read
from the model's detection scores (each score taken as the probability that the detection
is a real instance):

    e(s)  = min(s, 1 - s)       per detection with score s >= floor (default 0.05): a shown
                                proposal (s >= 0.5) is false with probability 1 - s and must
                                be rejected; a hidden one (s < 0.5) is a real instance with
                                probability s and must be drawn by hand
    U     = sum of e(s_i)       over the image's detections

U is 0 when the model is sure of everything it sees and grows with every instance it is
unsure of, so an image with many doubtful instances (much to correct, much to learn from)
outranks one with a single doubtful instance; it is stored with the proposals and the image
list sorts by it. Detections below the display threshold count: a cell the model half-sees
is exactly what a person should look at. An image with no detection above the floor scores
0 (the model is sure there is nothing; a person finds out at random-order cost).

Averaging e(s) instead (the first formula) ranked by noise: on a shifted project every image
holds dozens of low-score fragments and the mean barely moved (0.14 to 0.22) while U tracked
the review's actual corrections. Measured against random order on the loop benchmark
(tests/benchmarks/bench_loop.py, three seeds, mean segm AP after rounds 1-3), the sum beat
the mean and matched random within the seeds' spread; drawing images with probability
proportional to U instead of taking the top did worse in later rounds (figures in the
benchmark's docstring).
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


def expected_corrections(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-detection chance e(s) = min(s, 1 - s) that the reviewer must correct it."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return np.minimum(s, 1.0 - s)


def image_uncertainty(
    scores: Sequence[float] | np.ndarray, *, floor: float = DEFAULT_FLOOR
) -> float:
    """The image's uncertainty U >= 0: its expected corrections (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    return float(expected_corrections(s[s >= floor]).sum())


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
