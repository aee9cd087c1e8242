"""The project's one score threshold, and the floor proposals are stored down to.

Proposing stores every detection scoring at least :data:`SCORE_FLOOR`, whatever the
threshold, so whether a detection of score ``s`` is there never depends on the threshold
used when it was proposed. The threshold (saved in the project, :data:`THRESHOLD_KEY`) only
decides which stored proposals count as *shown*: drawn on the canvas, reached by Tab,
accepted by "accept shown" and by marking an image done (the hidden ones are rejected),
and exported with a proposed image. Changing it therefore never needs the model.

Projects from before this rule stored proposals above a "store score" (default 0.5) and
hid more with a separate slider; :func:`migrate_score_floor` turns what they showed into
the one threshold and has their untouched images proposed again down to the floor.
"""

from __future__ import annotations

import logging

from app.core.project_number import ProjectNumber
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Instance, Source
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

# The uncertainty floor too, so an image's uncertainty can be computed from what is stored.
# Measured with cells-mobile (CPU) on 34 real DSB2018 nuclei images (the demo's five and the
# first 30 of the val split): 4,822 proposals at 0.05 against 1,861 at 0.5 (median 1.7x per
# image; at most 959 on one 1024x749 image, 322 at 0.5) and 1.1 MB of encoded outlines
# against 0.6 MB: about 33 KB per image, small next to the image itself.
SCORE_FLOOR = 0.05
DEFAULT_THRESHOLD = 0.5
THRESHOLD_KEY = "score_threshold"  # project meta: the one threshold, e.g. "0.50"
FLOOR_KEY = "proposal_floor"  # project meta: proposals are stored down to this
LEGACY_STORE_KEY = "proposal_threshold"  # project meta of earlier versions: the store score


class ScoreThresholdError(MaskLoopError):
    """A score threshold outside what the project can show."""


def check_threshold(value: float) -> float:
    """``value`` rounded to 0.01, refused outside [:data:`SCORE_FLOOR`, 1]."""
    rounded = round(float(value), 2)
    if not SCORE_FLOOR <= rounded <= 1.0:
        raise ScoreThresholdError(
            f"score threshold {value} must be between {SCORE_FLOOR} and 1: proposals are "
            f"stored down to {SCORE_FLOOR}, so a lower one would show nothing more."
        )
    return rounded


_THRESHOLD = ProjectNumber(THRESHOLD_KEY, DEFAULT_THRESHOLD, 2, check_threshold, "score threshold")


def project_threshold(store: ProjectStore) -> float:
    """The project's score threshold (:data:`DEFAULT_THRESHOLD` until one is saved)."""
    return _THRESHOLD.read(store)


def set_project_threshold(store: ProjectStore, value: float) -> float:
    """Save the project's score threshold; returns it as saved (rounded to 0.01)."""
    return _THRESHOLD.write(store, value)


def migrate_score_floor(store: ProjectStore, *, shown: float | None = None) -> int:
    """Bring a project from before the one-threshold rule under it; returns the number of
    untouched images whose proposals must be made again (0 once migrated).

    The threshold becomes the higher of the old store score and ``shown`` (the old slider),
    so the same proposals stay shown. Untouched proposed images forget which model proposed
    them, so the next proposal pass (GUI or ``maskloop propose``) stores their detections
    down to the floor; until then they show what they showed before.
    """
    if store.get_meta(FLOOR_KEY) is not None:
        return 0
    with store.transaction():
        if store.get_meta(THRESHOLD_KEY) is None:
            legacy = store.get_meta(LEGACY_STORE_KEY)
            try:
                stored = float(legacy) if legacy is not None else DEFAULT_THRESHOLD
            except ValueError:
                stored = DEFAULT_THRESHOLD
            threshold = max(stored, shown if shown is not None else SCORE_FLOOR)
            set_project_threshold(store, min(max(threshold, SCORE_FLOOR), 1.0))
        human = store.images_with_human_work()
        stale = [
            image
            for image in store.images(status=ImageStatus.PROPOSED)
            if image.proposed_by is not None and image.id not in human
        ]
        for image in stale:
            store.set_proposed_by(image.id, None)
        store.set_meta(FLOOR_KEY, f"{SCORE_FLOOR:.2f}")
    if stale:
        log.info(
            "%d proposed images will be proposed again down to score %.2f (one threshold)",
            len(stale),
            SCORE_FLOOR,
        )
    return len(stale)


def is_hidden_proposal(instance: Instance, accepted: set[int], threshold: float) -> bool:
    """A pending proposal (unchanged, not in ``accepted``) scoring below ``threshold``."""
    return (
        instance.source == Source.MODEL
        and instance.id not in accepted
        and instance.score is not None
        and instance.score < threshold
    )


def exported_instances(store: ProjectStore, image_id: int, threshold: float) -> list[Instance]:
    """The image's instances an export writes: all but the proposals hidden below the
    threshold (what the reviewer sees is what is exported)."""
    instances = store.instances(image_id)
    if not any(i.source == Source.MODEL for i in instances):
        return instances
    accepted = store.accepted_ids(image_id)
    return [i for i in instances if not is_hidden_proposal(i, accepted, threshold)]
