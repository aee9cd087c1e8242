"""Edits on one image's instances, each committed at once and returning its exact inverse.

Every operation builds an :class:`Edit` and :meth:`ImageDocument.apply` commits it to the
store in one transaction and returns the edit that undoes it (including the image status,
which the store moves to ``in_progress`` on a first edit). The GUI wraps these in
QUndoCommands; nothing here knows about Qt.

Review rules:

- A proposal (``source=model``) stays ``model`` when it is *accepted* unchanged; acceptance
  is the instance's ``accepted`` flag in the store, written in the same transaction as the
  edit, so it survives reopening and undo restores it.
- Any change to a proposal's geometry or category makes it ``model_edited`` (it is then
  reviewed by definition and leaves the accepted set).
- Provenance follows the outline, not the category: a person's change to the outline of a
  proposal or an assisted instance makes it ``edited``; an assist's new outline (refine)
  makes any instance ``assisted``; drawn and imported outlines stay what they were, since
  they were already a person's.
- Rejecting a proposal deletes it.
- Marking an image ``done`` accepts the proposals still on it: everything on a done image is
  training data, so reject the wrong ones first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from app.core.geometry import mask_to_polygons, polygons_to_mask
from app.core.simplify_tolerance import DEFAULT_SIMPLIFY_TOLERANCE
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Provenance, Source
from app.errors import MaskLoopError

# A brush edit with a tolerance paints a raster up to this many times finer than the image,
# within this many raster pixels (a 360 px instance: ~45 ms on this project's 2-core CPU).
BRUSH_SUPERSAMPLE = 4
BRUSH_FINE_PIXELS = 1 << 21
# An edit waits this long for another process's write, then fails (the GUI says so) rather
# than freezing the window for the store's default lock timeout.
EDIT_LOCK_TIMEOUT_S = 2.0


class DocumentError(MaskLoopError):
    """An edit refers to something that is not on the image (reload the image and retry)."""


class DocumentChangedError(DocumentError):
    """Another program changed the image since it was loaded; it has been re-read."""


@dataclass
class Edit:
    """One atomic change to an image: instances added / updated / deleted, status, acceptance.

    ``discard`` deletes proposals hidden below the score threshold: gone like ``delete``d
    ones, but not counted as rejected by a reviewer (nobody saw them).
    """

    add: list[Instance] = field(default_factory=list)
    update: list[Instance] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)
    status: ImageStatus | None = None
    accept: list[int] = field(default_factory=list)
    unaccept: list[int] = field(default_factory=list)
    discard: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.add
            or self.update
            or self.delete
            or self.discard
            or self.status is not None
            or self.accept
            or self.unaccept
        )


def _state(instances: Iterable[Instance]) -> list[tuple]:
    """What an edit could conflict with, comparable between two reads of an image."""
    return sorted(
        (
            inst.id,
            inst.category_id,
            str(inst.source),
            str(inst.made_as),
            inst.score,
            [(p.exterior.tobytes(), [h.tobytes() for h in p.holes]) for p in inst.polygons],
        )
        for inst in instances
    )


def _edited(inst: Instance) -> Instance:
    """A copy marked as changed by a person: proposals become ``model_edited``."""
    out = inst.copy()
    if out.source == Source.MODEL:
        out.source = Source.MODEL_EDITED
    return out


# Outlines a person's change turns into ``edited`` (drawn and imported ones were a person's).
_MODEL_MADE = (Provenance.PROPOSAL, Provenance.ASSISTED)


def _reshaped(inst: Instance, provenance: Provenance | None) -> Provenance:
    """The provenance of ``inst`` after its outline was replaced: ``provenance`` when an
    assist made the new one, else what a person's change leaves."""
    if provenance is not None:
        return provenance
    return Provenance.EDITED if inst.made_as in _MODEL_MADE else inst.made_as


class ImageDocument:
    """The instances of one image, mirrored from the store and edited only through :meth:`apply`."""

    def __init__(self, store: ProjectStore, image_id: int) -> None:
        self.store = store
        self.image_id = image_id
        self.reload()

    def reload(self) -> None:
        """Re-read the image from the store (after a background writer, e.g. proposals)."""
        self._seen_version = self.store.data_version()
        self.status = self.store.image(self.image_id).status
        self.instances: dict[int, Instance] = {
            inst.id: inst for inst in self.store.instances(self.image_id)
        }
        self.accepted: set[int] = self.store.accepted_ids(self.image_id)

    # -- queries ------------------------------------------------------------------------------

    def instance(self, instance_id: int) -> Instance:
        try:
            return self.instances[instance_id]
        except KeyError:
            raise DocumentError(
                f"instance {instance_id} is no longer on image {self.image_id}"
            ) from None

    def is_pending(self, instance_id: int) -> bool:
        """True for a proposal nobody has accepted or edited yet."""
        inst = self.instance(instance_id)
        return inst.source == Source.MODEL and instance_id not in self.accepted

    def pending_ids(self) -> list[int]:
        return [i for i in self.instances if self.is_pending(i)]

    # -- applying -------------------------------------------------------------------------------

    def changed_elsewhere(self) -> bool:
        """True when another program (``propose --force``, a second window) changed this
        image's status or instances since they were loaded. Costs one pragma unless another
        connection has committed meanwhile."""
        version = self.store.data_version()
        if version == self._seen_version:
            return False
        image = self.store.image(self.image_id)
        saved = self.store.instances(self.image_id)
        if image.status != self.status or _state(saved) != _state(self.instances.values()):
            return True
        self._seen_version = version
        return False

    def _check_current(self) -> None:
        """Refuse an edit made on a stale view (:meth:`changed_elsewhere`)."""
        if self.changed_elsewhere():
            self.reload()
            raise DocumentChangedError(
                f"another program changed image {self.store.image(self.image_id).path} "
                "meanwhile; it has been reloaded, so check it and make the edit again"
            )

    def apply(self, edit: Edit) -> Edit:
        """Commit ``edit`` in one transaction; return the edit that restores the prior state.

        Raises :class:`DocumentChangedError` (nothing written) when another program changed
        the image since it was loaded.
        """
        self._check_current()
        before_status = self.status
        gone = [*edit.delete, *edit.discard]
        deleted = [self.instance(i) for i in gone]
        updated_before = [self.instance(inst.id) for inst in edit.update]
        accepted_before = set(self.accepted)
        instances = dict(self.instances)
        with self.store.transaction(lock_timeout=EDIT_LOCK_TIMEOUT_S):
            added = self.store.apply_edit(
                self.image_id,
                add=edit.add,
                update=edit.update,
                delete=edit.delete,
                status=edit.status,
                discard=edit.discard,
            )
            for i in gone:
                del instances[i]
            for inst in [*edit.update, *added]:
                instances[inst.id] = inst.copy()
            accepted = (accepted_before - set(gone) - set(edit.unaccept)) | set(edit.accept)
            accepted = {
                i for i in accepted if i in instances and instances[i].source == Source.MODEL
            }
            self.store.set_accepted(accepted - accepted_before, True)
            self.store.set_accepted((accepted_before - accepted) & instances.keys(), False)
            status = self.store.image(self.image_id).status
        self.instances, self.accepted, self.status = instances, accepted, status
        return Edit(
            add=deleted,
            update=updated_before,
            delete=[inst.id for inst in added],
            status=before_status,
            accept=sorted(accepted_before - accepted),
            unaccept=sorted(accepted - accepted_before),
        )

    # -- operations (each returns the inverse edit) ----------------------------------------------

    def add_instance(self, instance: Instance) -> tuple[Edit, int]:
        """Add an instance; returns the inverse and the new instance's id."""
        inverse = self.apply(Edit(add=[instance]))
        return inverse, inverse.delete[0]

    def delete_instances(self, ids: Iterable[int]) -> Edit:
        return self.apply(Edit(delete=list(dict.fromkeys(ids))))

    def replace_geometry(
        self,
        instance_id: int,
        polygons: Sequence[Polygon],
        provenance: Provenance | None = None,
    ) -> Edit:
        """New polygons for an instance (vertex edit, brush, eraser: ``edited``; an assist's
        answer: ``provenance=assisted``); empty deletes it."""
        if not polygons:
            return self.delete_instances([instance_id])
        return self.apply(Edit(update=[self._reshaped_copy(instance_id, polygons, provenance)]))

    def absorb(self, instance_id: int, other_id: int, polygons: Sequence[Polygon]) -> Edit:
        """``instance_id`` takes the outline ``polygons`` (a person's edit) and ``other_id``,
        whose region it now covers, is deleted: one edit, e.g. a neighbouring proposal
        added to the selected instance as a region."""
        if other_id == instance_id:
            raise DocumentError("an instance cannot absorb itself")
        if not polygons:
            raise DocumentError("the absorbing instance needs an outline")
        self.instance(other_id)  # it must exist before anything changes
        return self.apply(
            Edit(
                update=[self._reshaped_copy(instance_id, polygons, None)], delete=[other_id]
            )
        )

    def _reshaped_copy(
        self, instance_id: int, polygons: Sequence[Polygon], provenance: Provenance | None
    ) -> Instance:
        before = self.instance(instance_id)
        inst = _edited(before)
        inst.provenance = _reshaped(before, provenance)
        inst.polygons = [p.copy() for p in polygons]
        return inst

    def change_category(self, ids: Iterable[int], category_id: int) -> Edit:
        changed = []
        for i in ids:
            inst = self.instance(i)
            if inst.category_id != category_id:
                out = _edited(inst)
                out.category_id = category_id
                changed.append(out)
        return self.apply(Edit(update=changed))

    def accept(self, ids: Iterable[int]) -> Edit:
        """Accept proposals unchanged; ids that are not pending proposals are ignored."""
        return self.apply(Edit(accept=[i for i in ids if self.is_pending(i)]))

    def reject(self, ids: Iterable[int]) -> Edit:
        """Reject proposals (delete them); instances a person made or edited are kept."""
        return self.delete_instances(i for i in ids if self.instance(i).source == Source.MODEL)

    def accept_above(self, threshold: float) -> Edit:
        """Accept every pending proposal whose score is at least ``threshold``."""
        ids = [
            i
            for i in self.pending_ids()
            if (self.instances[i].score if self.instances[i].score is not None else 1.0)
            >= threshold
        ]
        return self.apply(Edit(accept=ids))

    def merge(self, ids: Sequence[int]) -> tuple[Edit, int]:
        """Merge instances into one (its parts are theirs); category of the first one.

        The result is ``human`` if any part was drawn by a person, else ``model_edited``;
        its outline keeps the parts' provenance when they all share a person's one (drawn,
        imported), else it is ``edited``.
        """
        parts = [self.instance(i) for i in dict.fromkeys(ids)]
        if len(parts) < 2:
            raise DocumentError("select at least two instances to merge")
        human = any(p.source == Source.HUMAN for p in parts)
        scores = [p.score for p in parts if p.score is not None]
        made = {p.made_as for p in parts}
        (common,) = made if len(made) == 1 else (None,)
        merged = Instance(
            category_id=parts[0].category_id,
            polygons=[poly.copy() for p in parts for poly in p.polygons],
            score=None if human or not scores else max(scores),
            source=Source.HUMAN if human else Source.MODEL_EDITED,
            model_version=None if human else parts[0].model_version,
            provenance=Provenance.EDITED if common in (None, *_MODEL_MADE) else common,
        )
        inverse = self.apply(Edit(add=[merged], delete=[p.id for p in parts]))
        return inverse, inverse.delete[0]

    def set_status(self, status: ImageStatus) -> Edit:
        """Set the image status; ``done`` also accepts the proposals still on the image."""
        status = ImageStatus(status)
        accept = self.pending_ids() if status == ImageStatus.DONE else []
        return self.apply(Edit(status=status, accept=accept))


def _fine_scale(width: int, height: int, tolerance: float) -> int:
    """Raster pixels per image pixel for a brush edit of a width x height region."""
    if tolerance <= 0:
        return 1  # pixel-exact outlines asked for: paint image pixels
    budget = BRUSH_FINE_PIXELS / max(width * height, 1)
    return max(1, min(BRUSH_SUPERSAMPLE, math.isqrt(int(budget))))


def _fine_region(
    boxes: list[np.ndarray], image_size: tuple[int, int], tolerance: float
) -> tuple[int, int, int, int, int] | None:
    """The image region (x0, y0, x1, y1) around ``boxes`` (corner points), clipped to the
    image, and its raster scale; None when nothing of it lies on the image."""
    width, height = image_size
    lo = np.floor(np.min(boxes, axis=0)).astype(int)
    hi = np.ceil(np.max(boxes, axis=0)).astype(int)
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), width), min(int(hi[1]), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1, _fine_scale(x1 - x0, y1 - y0, tolerance)


def _outline_boxes(polygons: Sequence[Polygon]) -> list[np.ndarray]:
    rings = [p.exterior for p in polygons if len(p.exterior)]
    if not rings:
        return []
    allpts = np.concatenate(rings)
    return [allpts.min(0) - 1, allpts.max(0) + 1]


def _fine_mask(polygons: Sequence[Polygon], region: tuple[int, int, int, int, int]) -> np.ndarray:
    """The polygons rasterised over ``region`` at its scale (uint8)."""
    x0, y0, x1, y1, s = region
    shift = np.array([x0, y0], np.float32)
    local = [
        Polygon((p.exterior - shift) * s, [(h - shift) * s for h in p.holes]) for p in polygons
    ]
    return polygons_to_mask(local, (y1 - y0) * s, (x1 - x0) * s).astype(np.uint8)


def brush_polygons(
    polygons: Sequence[Polygon],
    stroke: np.ndarray,
    radius: float,
    *,
    erase: bool,
    image_size: tuple[int, int],
    tolerance: float = DEFAULT_SIMPLIFY_TOLERANCE,
) -> list[Polygon]:
    """Polygons after painting (or erasing) a round brush of ``radius`` px along ``stroke``.

    Works in the region the stroke and the polygons cover only, so a brush dab on a large
    image costs a small raster; the result is re-traced with :func:`mask_to_polygons`
    (holes included) and simplified by ``tolerance`` px. With a tolerance the raster is up
    to 4x finer than the image, so the untouched part of a smooth outline comes back smooth
    (within about ``tolerance``, with few vertices) instead of as a pixel staircase; with 0
    the brush paints image pixels and the outline follows them exactly. ``image_size`` is
    (width, height); the result is clipped to it.
    """
    pts = np.asarray(stroke, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return [p.copy() for p in polygons]
    boxes = [pts.min(0) - radius - 1, pts.max(0) + radius + 1, *_outline_boxes(polygons)]
    region = _fine_region(boxes, image_size, tolerance)
    if region is None:
        return [p.copy() for p in polygons]
    x0, y0, _, _, s = region
    mask = _fine_mask(polygons, region)
    dab = np.zeros_like(mask)
    # Raster pixel (c, r) covers [c, c+1) x [r, r+1); its centre is at (c + 0.5, r + 0.5).
    centres = np.round((pts - np.array([x0, y0], np.float32)) * s - 0.5).astype(np.int32)
    r = max(int(round(radius * s)), 0)
    for a, b in zip(centres, centres[1:], strict=False):
        cv2.line(dab, tuple(int(v) for v in a), tuple(int(v) for v in b), 1, 2 * r + 1)
    for c in centres:
        cv2.circle(dab, (int(c[0]), int(c[1])), r, 1, -1)
    if erase:
        mask[dab.astype(bool)] = 0
    else:
        mask |= dab
    return mask_to_polygons(mask, tolerance=tolerance, offset=(x0, y0), scale=s)


@dataclass
class CombinedOutline:
    """An outline with a region added or removed; ``changed`` is False when no raster
    pixel changed (the region was already inside, or does not touch what it removes from)."""

    polygons: list[Polygon]
    changed: bool


SLIVER_SHARE = 0.1  # of the removed region's area


def _drop_slivers(mask: np.ndarray, removed: np.ndarray) -> None:
    """Clear the pieces of ``mask`` that touch ``removed`` and are smaller than
    :data:`SLIVER_SHARE` of it (in place)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return
    limit = SLIVER_SHARE * np.count_nonzero(removed)
    near = cv2.dilate(removed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    touching = np.unique(labels[near & (labels > 0)])
    small = touching[stats[touching, cv2.CC_STAT_AREA] < limit]
    if len(small):
        mask[np.isin(labels, small)] = 0


def combine_polygons(
    polygons: Sequence[Polygon],
    region: Sequence[Polygon],
    *,
    subtract: bool,
    image_size: tuple[int, int],
    tolerance: float = DEFAULT_SIMPLIFY_TOLERANCE,
) -> CombinedOutline:
    """``polygons`` united with ``region`` (or with ``region`` cut out, ``subtract``).

    Rasterised over the two outlines' joint box exactly as :func:`brush_polygons` paints
    (so the same fineness and the same re-tracing at ``tolerance`` px): holes are kept, a
    disjoint union gives several parts, and a subtraction that removes everything gives
    no polygons. ``image_size`` is (width, height); the result is clipped to it.

    A subtraction also drops the slivers it leaves along the cut: pieces touching the removed
    region and smaller than :data:`SLIVER_SHARE` of it (the model's region for the removing
    click is rarely exactly the outline it should take away).
    """
    boxes = [*_outline_boxes(polygons), *_outline_boxes(region)]
    frame = _fine_region(boxes, image_size, tolerance) if boxes else None
    if frame is None:
        return CombinedOutline([p.copy() for p in polygons], False)
    mask, other = _fine_mask(polygons, frame), _fine_mask(region, frame).astype(bool)
    before = mask.copy()
    if subtract:
        mask[other] = 0
        _drop_slivers(mask, other)
    else:
        mask[other] = 1
    if np.array_equal(mask, before):
        return CombinedOutline([p.copy() for p in polygons], False)
    x0, y0, _, _, s = frame
    return CombinedOutline(
        mask_to_polygons(mask, tolerance=tolerance, offset=(x0, y0), scale=s), True
    )
