"""Active learning: which images should a person annotate next?

The score of an image is the number of corrections its review is expected to need, read
from the model's detection scores (each score taken as the probability that the detection
is a real instance):

    e(s)  = 1 - s  if s >= t    per object with score s >= floor (default 0.05): a shown
            s      if s <  t    proposal (s at or above the project's score threshold t) is
                                false with probability 1 - s and must be rejected; a hidden
                                one is a real instance with probability s and must be drawn
                                by hand (at t = 0.5 this is min(s, 1 - s))
    U     = sum of e(s_k)       over the image's objects

An object is a detection together with the weaker detections whose boxes lie mostly on it
(intersection over the smaller box > 0.5), scored by its best detection: on a shifted
project a model returns many low-score fragments of cells it already found, and none of
them costs the reviewer anything. Counted once, U measures what the review will cost, not
how fragmented the model's output is.

U is 0 when the model is sure of everything it sees and grows with every object it is
unsure of, so an image with many doubtful objects (much to correct, much to learn from)
outranks one with a single doubtful object; it is stored with the proposals and the image
list sorts by it. Detections below the display threshold count: a cell the model half-sees
is exactly what a person should look at. An image with no detection above the floor scores
0 (the model is sure there is nothing; a person finds out at random-order cost).

Averaging e(s) instead (the first formula) ranked by noise: on a shifted project every image
holds dozens of low-score fragments and the mean barely moved (0.14 to 0.22) while U tracked
the review's actual corrections. Measured against random order on the loop benchmark
(tests/benchmarks/bench_loop.py; figures in its docstring).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from enum import StrEnum

import numpy as np

from app.core.score_threshold import DEFAULT_THRESHOLD, SCORE_FLOOR
from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus, Polygon

DEFAULT_FLOOR = SCORE_FLOOR
# Images a person may still be asked to annotate.
CANDIDATE_STATUSES = (ImageStatus.NEW, ImageStatus.PROPOSED)


class Strategy(StrEnum):
    UNCERTAINTY = "uncertainty"
    RANDOM = "random"


def expected_corrections(
    scores: Sequence[float] | np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Per-detection chance e(s) that the reviewer must correct it: reject it if it is shown
    (s >= ``threshold``), 1 - s; draw it if it is hidden, s."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return np.where(s >= threshold, 1.0 - s, s)


def image_uncertainty(
    scores: Sequence[float] | np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
    *,
    floor: float = DEFAULT_FLOOR,
    threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """The image's uncertainty U >= 0: its expected corrections (module docstring) when the
    proposals scoring at least ``threshold`` are shown.

    ``boxes`` (N x 4, x0 y0 x1 y1) group fragments into objects; without them every
    detection counts as an object.
    """
    s = np.asarray(scores, dtype=np.float64)
    keep = s >= floor
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) != len(s):
            raise ValueError(f"{len(s)} scores but {len(b)} boxes")
        keep = np.flatnonzero(keep)[object_leaders(b[keep], s[keep])]
    return float(expected_corrections(s[keep], threshold).sum())


def rescore_uncertainty(
    store: ProjectStore, threshold: float, should_stop: Callable[[], bool] | None = None
) -> int:
    """Compute again, from the stored proposals, the uncertainty of the untouched images a
    model proposed, for a new score threshold; returns how many were rescored.

    The proposals hold every detection down to the score floor, so no model is needed.
    Images waiting to be proposed again (migrated, ``proposed_by`` unset) and score-only
    images (no proposals stored) keep the figure their proposal run stored.
    """
    human = store.images_with_human_work()
    done = 0
    for image in store.images(status=ImageStatus.PROPOSED):
        if should_stop is not None and should_stop():
            break
        if image.proposed_by is None or image.id in human:
            continue
        proposals = [i for i in store.instances(image.id) if i.score is not None]
        scores = [i.score for i in proposals]
        boxes = [box_xyxy(i.polygons) for i in proposals]
        store.set_uncertainty(image.id, image_uncertainty(scores, boxes, threshold=threshold))
        done += 1
    return done


def box_xyxy(polygons: Sequence[Polygon]) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) :func:`image_uncertainty` groups a detection by."""
    from app.core.geometry import polygons_bbox  # cv2: not while the CLI only parses

    x, y, w, h = polygons_bbox(polygons)
    return (x, y, x + w, y + h)


def object_leaders(boxes: np.ndarray, scores: np.ndarray, overlap: float = 0.5) -> np.ndarray:
    """Indices of the detections that start an object, best score first.

    Greedy like NMS, but a weaker box is folded into a stronger one when their intersection
    covers more than ``overlap`` of the smaller box (a fragment inside a cell has a low IoU
    with it).
    """
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    smaller = np.minimum(area[:, None], area[None, :])
    covered = inter > overlap * np.maximum(smaller, 1e-9)
    folded = np.zeros(len(b), dtype=bool)
    leaders = []
    for i in range(len(b)):
        if folded[i]:
            continue
        leaders.append(order[i])
        folded |= covered[i]
    return np.asarray(leaders, dtype=np.int64)


def cold_start(store: ProjectStore) -> bool:
    """True while no image of the project is done: no model can have learned from it yet."""
    return store.count_images(ImageStatus.DONE) == 0


def next_images(
    store: ProjectStore,
    count: int,
    strategy: Strategy | str = Strategy.UNCERTAINTY,
    seed: int = 0,
    *,
    use_cold_start: bool = True,
) -> list[ImageRecord]:
    """The ``count`` images to annotate next among those nobody has worked on.

    ``uncertainty``: most uncertain first; images not scored yet follow in path order. While
    the project has no done image (:func:`cold_start`) and ``use_cold_start`` is on, a seeded
    random sample instead: a model that has never seen the project's images ranks them worse
    than chance (the loop benchmark's first round: -0.006 segm AP over 6 seeds), and the
    first labels should represent the whole folder.
    ``random``: a seeded shuffle (the baseline active learning is measured against); it
    depends only on the seed and the candidates, not on their scores.
    """
    candidates = store.images(status=CANDIDATE_STATUSES, order="uncertainty")
    shuffle = Strategy(strategy) is Strategy.RANDOM or (use_cold_start and cold_start(store))
    if shuffle:
        candidates.sort(key=lambda r: r.id)
        random.Random(seed).shuffle(candidates)
    return candidates[: max(0, count)]
