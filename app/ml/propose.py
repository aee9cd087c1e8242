"""Batch proposals for a project: choose the images, run the predictor, store the results.

Each image is stored in its own transaction as soon as it is done, so an interrupted run
loses at most the image in flight; the next run skips images this model already proposed
(recorded per image in the store, written with the proposals) and continues. Images a person has
touched are never written (:meth:`ProjectStore.replace_proposals` refuses them).

Each image's active-learning uncertainty (:func:`app.ml.active.image_uncertainty`) is
stored with its proposals. It needs the detections a reviewer never sees, down to
:data:`app.ml.active.DEFAULT_FLOOR`, so the predictor runs at :func:`detection_threshold`
and only detections scoring at least ``threshold`` become proposals. A score-only run
stores the uncertainty and no proposals.

Callers store down to :data:`app.core.score_threshold.SCORE_FLOOR`: the project's score
threshold then only decides which stored proposals are shown, so changing it needs no model
run and a detection's presence never depends on it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.core.images import read_image
from app.core.score_threshold import migrate_score_floor, project_threshold
from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus, Instance
from app.errors import MaskLoopError
from app.ml.active import DEFAULT_FLOOR, box_xyxy, image_uncertainty
from app.ml.categories import match_categories
from app.ml.zoo import ModelCard

log = logging.getLogger(__name__)


class ProposeError(MaskLoopError):
    """A batch-proposal request cannot be carried out as given."""


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count`` equal parts of a project's images."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(p) for p in text.split("/"))
        except ValueError as exc:
            raise ProposeError(f"--shard {text!r}: write it as I/N, e.g. 2/4.") from exc
        if not 1 <= index <= count:
            raise ProposeError(f"--shard {text!r}: I must be between 1 and N.")
        return cls(index, count)

    def holds(self, path: str) -> bool:
        """Decided by a hash of the path: stable on every machine and as images are added."""
        digest = hashlib.sha1(path.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


@dataclass
class Selection:
    """The images to propose, and how many were passed over and why."""

    images: list[ImageRecord]
    already_proposed: int = 0
    human_work: int = 0
    other_shards: int = 0
    not_matching: int = 0


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one image: stored proposals, left alone (human work) or failed.

    ``stored`` is also True for a score-only run that stored the uncertainty.
    """

    image: ImageRecord
    instances: int = 0
    stored: bool = False
    error: str | None = None
    seconds: float = 0.0
    uncertainty: float | None = None


def detection_threshold(threshold: float) -> float:
    """The score threshold to run the predictor at so that uncertainty sees enough."""
    return min(threshold, DEFAULT_FLOOR)


def select_images(
    store: ProjectStore,
    model_id: str,
    *,
    patterns: Sequence[str] = (),
    shard: Shard | None = None,
    force: bool = False,
    score_only: bool = False,
) -> Selection:
    """New and proposed images (path order) matching ``patterns`` and in ``shard``.

    Images already proposed by ``model_id`` (with ``score_only``: already scored by it) are
    skipped unless ``force``, and so are images holding a person's instances (proposals
    would be refused anyway); patterns are shell-style and match the path relative to the
    project folder (``*`` crosses folders).
    """
    chosen = Selection([])
    human = store.images_with_human_work()
    for image in store.images(status=[ImageStatus.NEW, ImageStatus.PROPOSED]):
        if patterns and not any(fnmatch.fnmatchcase(image.path, p) for p in patterns):
            chosen.not_matching += 1
        elif shard is not None and not shard.holds(image.path):
            chosen.other_shards += 1
        elif not force and (
            image.scored_by == model_id
            if score_only
            else image.status is ImageStatus.PROPOSED and image.proposed_by == model_id
        ):
            chosen.already_proposed += 1
        elif image.id in human:
            chosen.human_work += 1
        else:
            chosen.images.append(image)
    return chosen


class CategoryMapper:
    """Card categories -> project category ids (:func:`app.ml.categories.match_categories`);
    missing ones are added on first use."""

    def __init__(self, store: ProjectStore, card: ModelCard) -> None:
        self._store = store
        self._names = {c.id: c.name for c in card.categories}
        self._map = match_categories(card.categories, store.categories())

    def __call__(self, card_category_id: int) -> int:
        if card_category_id not in self._map:
            name = self._names[card_category_id]
            existing = self._store.category_by_name(name)
            category = existing or self._store.add_category(name)
            if existing is None:
                log.info("added category %r for the model's proposals", name)
            self._map[card_category_id] = category.id
        return self._map[card_category_id]


class SupportsPredict(Protocol):
    """What :func:`propose_images` needs from a predictor (``app.ml.predictor.Predictor``)."""

    def predict(
        self, image: object, *, should_stop: Callable[[], bool] | None = None
    ) -> list[Instance]: ...


def propose_images(
    store: ProjectStore,
    predictor: SupportsPredict,
    card: ModelCard,
    images: Sequence[ImageRecord],
    *,
    model_id: str,
    model_version: int | None,
    should_stop: Callable[[], bool] | None = None,
    threshold: float | None = None,
    score_only: bool = False,
) -> Iterator[ImageOutcome]:
    """Propose each image in turn, storing its result at once; yields one outcome per image.

    Every detection the predictor returns counts towards the image's stored uncertainty;
    only those scoring at least ``threshold`` (None: all) are stored as proposals, and none
    with ``score_only``. Build the predictor at ``detection_threshold(threshold)``. A
    project from before the score floor is migrated first (:func:`migrate_score_floor`). An
    unreadable image is reported and skipped; the model's own errors propagate.
    """
    migrate_score_floor(store)
    shown_from = project_threshold(store)
    categories = CategoryMapper(store, card)
    for image in images:
        t0 = time.perf_counter()
        try:
            pixels = read_image(store.abspath(image))
        except MaskLoopError as exc:
            log.warning("cannot read %s: %s", image.path, exc)
            yield ImageOutcome(image, error=str(exc))
            continue
        detections = predictor.predict(pixels, should_stop=should_stop)
        uncertainty = image_uncertainty(
            [d.score or 0.0 for d in detections],
            [box_xyxy(d.polygons) for d in detections],
            threshold=shown_from,
        )
        instances = [d for d in detections if threshold is None or (d.score or 0.0) >= threshold]
        if score_only:
            instances = []
        for inst in instances:
            inst.category_id = categories(inst.category_id)
        with store.transaction():
            stored = score_only or store.replace_proposals(image.id, instances, model_version)
            if stored:
                store.set_uncertainty(image.id, uncertainty)
                store.set_scored_by(image.id, model_id)
                if not score_only:
                    store.set_proposed_by(image.id, model_id)
        yield ImageOutcome(
            image,
            len(instances) if stored else 0,
            stored,
            seconds=time.perf_counter() - t0,
            uncertainty=uncertainty if stored else None,
        )
