"""Plain data types shared by every layer.

They hold numpy arrays and enums only (no Qt, no torch) so they can cross threads and
process boundaries, be stored in SQLite and be unit-tested in isolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class ImageStatus(StrEnum):
    """Where an image is in the review workflow."""

    NEW = "new"
    PROPOSED = "proposed"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    SKIPPED = "skipped"


class Source(StrEnum):
    """Who made an instance: a person, the model, or the model then a person."""

    HUMAN = "human"
    MODEL = "model"
    MODEL_EDITED = "model_edited"


class Provenance(StrEnum):
    """How an instance's outline was made: what the review and the assists cost a person.

    ``source`` says whose instance it is (proposals never overwrite a person's work);
    provenance says which tool made its geometry, so a project can show how many outlines
    the model's assists saved drawing by hand.
    """

    PROPOSAL = "proposal"  # the model's proposal, unchanged (pending or accepted as is)
    ASSISTED = "assisted"  # a box-to-mask, click or refine answer a person asked for
    DRAWN = "drawn"  # drawn by hand (polygon, brush)
    EDITED = "edited"  # a proposal or assisted outline a person then changed
    IMPORTED = "imported"  # read from another tool's file (COCO, YOLO, ROIs, labelme, ...)

    @classmethod
    def implied_by(cls, source: Source) -> Provenance:
        """The provenance an instance has when nothing more is known than its source."""
        return _IMPLIED[Source(source)]


_IMPLIED = {
    Source.MODEL: Provenance.PROPOSAL,
    Source.MODEL_EDITED: Provenance.EDITED,
    Source.HUMAN: Provenance.DRAWN,
}


@dataclass(frozen=True)
class Category:
    """An annotation class. ``id`` is stable for the project's lifetime (COCO keeps it)."""

    id: int
    name: str
    color: str = "#e6194b"


@dataclass
class ImageRecord:
    """One image of a project. ``path`` is relative to the project folder, POSIX style."""

    id: int
    path: str
    width: int
    height: int
    status: ImageStatus = ImageStatus.NEW
    size_bytes: int = 0
    mtime_ns: int = 0
    uncertainty: float | None = None
    split: str | None = None
    missing: bool = False
    proposed_by: str | None = None  # model id that made the current proposals
    scored_by: str | None = None  # model id that computed ``uncertainty``
    error: str | None = None  # why the last proposal run failed on it, None if it did not


def _as_ring(points: np.ndarray | list) -> np.ndarray:
    if (
        isinstance(points, np.ndarray)
        and points.dtype == np.float32
        and points.ndim == 2
        and points.shape[1] == 2
        and points.flags.c_contiguous
    ):
        return points  # already a ring (e.g. decoded from the store): no copy, no checks
    ring = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    return np.ascontiguousarray(ring)


@dataclass
class Polygon:
    """An outer ring plus zero or more hole rings, each an (N, 2) float32 array of x, y."""

    exterior: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exterior = _as_ring(self.exterior)
        self.holes = [_as_ring(h) for h in self.holes]

    def copy(self) -> Polygon:
        return Polygon(self.exterior.copy(), [h.copy() for h in self.holes])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Polygon):
            return NotImplemented
        return (
            np.array_equal(self.exterior, other.exterior)
            and len(self.holes) == len(other.holes)
            and all(np.array_equal(a, b) for a, b in zip(self.holes, other.holes, strict=True))
        )


@dataclass
class Instance:
    """One object on one image: a category and one or more polygons (parts), each with holes.

    ``id`` and ``image_id`` are None until the store has saved it.
    """

    category_id: int
    polygons: list[Polygon]
    score: float | None = None
    source: Source = Source.HUMAN
    model_version: int | None = None
    id: int | None = None
    image_id: int | None = None
    crowd: bool = False  # a COCO crowd region: evaluated as "ignore", never a training target
    # None until it is known: the store then writes what ``source`` implies.
    provenance: Provenance | None = None

    @property
    def made_as(self) -> Provenance:
        """How the outline was made (``provenance``, else what ``source`` implies)."""
        return self.provenance or Provenance.implied_by(self.source)

    @property
    def has_holes(self) -> bool:
        return any(p.holes for p in self.polygons)

    def copy(self) -> Instance:
        return Instance(
            category_id=self.category_id,
            polygons=[p.copy() for p in self.polygons],
            score=self.score,
            source=self.source,
            model_version=self.model_version,
            id=self.id,
            image_id=self.image_id,
            crowd=self.crowd,
            provenance=self.provenance,
        )


@dataclass
class ModelVersion:
    """A trained model registered in a project (the retrain loop's output)."""

    id: int
    card_id: str
    path: str
    parent_id: int | None = None
    categories: list[Category] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    images_used: int = 0
    created: str = ""
    name: str = ""


@dataclass
class ProposalOutcomes:
    """How reviewers treated one model version's proposals (None: a zoo model)."""

    model_version: int | None
    accepted: int = 0  # kept unchanged on images marked done
    edited: int = 0  # changed by a person (source model_edited)
    rejected: int = 0  # deleted by a person
    pending: int = 0  # unchanged, on images not done yet
    added_by_hand: int = 0  # human instances on the done images this version proposed for

    @property
    def reviewed(self) -> int:
        return self.accepted + self.edited + self.rejected

    def to_dict(self) -> dict[str, int | None]:
        return {
            "model_version": self.model_version,
            "accepted": self.accepted,
            "edited": self.edited,
            "rejected": self.rejected,
            "pending": self.pending,
            "added_by_hand": self.added_by_hand,
        }
