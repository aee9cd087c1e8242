"""The annotation loop with a simulated annotator: how much work does the model save?

A synthetic project whose ground truth only the simulated annotator sees goes through
rounds of the app's own loop: propose (:mod:`app.ml.propose`, which also stores each
image's uncertainty) -> choose the next images (:func:`app.ml.active.next_images`, by
uncertainty or at random) -> review them against the hidden truth -> mark them done ->
fine-tune the previous round's model on every done image (:mod:`app.ml.train`) ->
register it as a model version -> evaluate on a fixed held-out set: segm AP, and what
reviewing the model's proposals on those images would cost (the same images every round,
so the cost measures the model's progress; the images a strategy picks get harder as
uncertainty ordering takes the doubtful ones first). The loop benchmark (bench_loop.py
beside it) and test_loop_sim.py drive it; it is harness code, not part of the product, so
it lives here rather than in the app package.

Cost model of a review, in operations (clicks and drags an annotator makes):

    accept a proposal matching a hidden instance at mask IoU >= 0.85     1 op
    edit a proposal matching at 0.5 <= IoU < 0.85 (drag a few vertices)  3 ops
    reject a proposal matching nothing (or a duplicate)                  1 op
    draw a missed instance by hand                                        1 op + 1 per 4 vertices

With the model's assists (:class:`SimulatedAssists`, the app's own
:class:`app.ml.assist.Assistant` on the round's model), a missed instance and a poor
proposal are tried with an assist first, and its answer is reviewed like a proposal:

    missed: drag a box (the truth box, each side moved by up to 15 % of the box's size,
    as a person drags it), 1 op; then the answer
      reaches IoU >= 0.85: keep it                                        1 op
      reaches 0.5 <= IoU < 0.85: edit it                                  3 ops
      less, or the model sees no object: undo, draw by hand               1 op + drawing
    poor proposal: drag a new box around the object with Shift (the Box tool's refine,
    which replaces the selected outline; its box as loose as a missed cell's), 1 op; then
    the answer
      reaches IoU >= 0.85: done                                           0 ops
      reaches 0.5 <= IoU < 0.85: edit it                                  3 ops
      less: undo, edit the proposal                                       1 + 3 ops

A failed try costs its own ops and an undo, since a person sees the answer only after
asking. Matching is greedy by descending score to the unmatched same-category instance of
highest IoU, as in :func:`app.ml.evaluate.reviewer_counts`. The baseline is drawing every
instance by hand (``manual_ops``). Vertices are those of the truth outline simplified as the
app stores polygons (:func:`app.core.geometry.label_map_to_instances`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn

from app.core.geometry import label_map_to_instances, polygons_bbox, polygons_to_mask
from app.core.images import read_image
from app.core.store import NewImage, ProjectStore
from app.core.types import (
    Category,
    ImageRecord,
    ImageStatus,
    Instance,
    Polygon,
    Provenance,
    Source,
)
from app.demo.synthetic import (
    OTHER_MICROSCOPE,
    Regime,
    SyntheticSample,
    generate_sample,
    sample_seed,
)
from app.errors import MaskLoopError
from app.ml import zoo
from app.ml.active import CANDIDATE_STATUSES, Strategy, next_images
from app.ml.assist import Assistant, NoObjectFound
from app.ml.dataset import ProjectDataset, category_labels
from app.ml.defaults import FINE_TUNE_BATCH_SIZE, FINE_TUNE_LR
from app.ml.evaluate import (
    ACCEPT_IOU,
    AP_SCORE_FLOOR,
    EDIT_IOU,
    EvalImage,
    evaluate_predictor,
    greedy_matches,
)
from app.ml.models import PROMPT_BOX_JITTER, build_model
from app.ml.predictor import Predictor
from app.ml.preprocess import InputSpec
from app.ml.propose import detection_threshold, propose_images
from app.ml.train import FinishedEvent, TrainConfig, train
from app.ml.versions import register_version

log = logging.getLogger(__name__)

ACCEPT_OPS = 1
EDIT_OPS = 3
REJECT_OPS = 1
DRAW_OPS = 1
VERTICES_PER_OP = 4
BOX_OPS = 1  # drag a box around a missed instance (its answer is then reviewed)
REFINE_OPS = 1  # refine a selected proposal (a good answer needs nothing more)
UNDO_OPS = 1  # take back an assist's answer that is worse than starting again
# A dragged box's sides miss the object's by up to this share of its size (as the mask head
# is trained for loose boxes).
BOX_JITTER = PROMPT_BOX_JITTER
CATEGORY = "nucleus"
RANDOM_BASE = "random"
"""Base model name meaning: the mobile architecture with random weights."""
_TEST_SEED_OFFSET = 1_000_003


class LoopSimError(MaskLoopError):
    """The simulated loop cannot run as configured."""


def draw_ops(polygons: Sequence[Polygon]) -> int:
    """What drawing an instance by hand costs: 1 op + 1 per (started) 4 vertices."""
    vertices = sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in polygons)
    return DRAW_OPS + math.ceil(vertices / VERTICES_PER_OP)


@dataclass
class ReviewCounts:
    """What the simulated annotator did on some images, and what it cost."""

    accepted: int = 0
    edited: int = 0
    rejected: int = 0
    drawn: int = 0
    draw_ops: int = 0  # ops spent drawing the ``drawn`` instances
    instances: int = 0  # truth instances on the reviewed images
    manual_ops: int = 0  # ops to draw all of them by hand (the no-model baseline)
    # With assists: missed instances whose box answer was kept, edited, or undone (then
    # ``drawn``); poor proposals whose refine answer was kept, edited (also in ``edited``),
    # or undone (then the proposal is edited: ``edited``).
    boxed: int = 0
    box_edited: int = 0
    box_failed: int = 0
    refined: int = 0
    refine_edited: int = 0
    refine_failed: int = 0

    @property
    def ops(self) -> int:
        return (
            ACCEPT_OPS * self.accepted
            + EDIT_OPS * self.edited
            + REJECT_OPS * self.rejected
            + self.draw_ops
            + BOX_OPS * (self.boxed + self.box_edited + self.box_failed)
            + ACCEPT_OPS * self.boxed
            + EDIT_OPS * self.box_edited
            + REFINE_OPS * (self.refined + self.refine_edited + self.refine_failed)
            + UNDO_OPS * (self.box_failed + self.refine_failed)
        )

    @property
    def ops_per_instance(self) -> float | None:
        return self.ops / self.instances if self.instances else None

    @property
    def manual_ops_per_instance(self) -> float | None:
        return self.manual_ops / self.instances if self.instances else None

    def __add__(self, other: ReviewCounts) -> ReviewCounts:
        return ReviewCounts(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )


@dataclass
class Review:
    """The edits that turn an image's proposals into its truth (for ``store.apply_edit``)."""

    counts: ReviewCounts
    kept: list[Instance] = field(default_factory=list)  # accepted as proposed
    updated: list[Instance] = field(default_factory=list)  # edited: truth outline, same id
    deleted: list[int] = field(default_factory=list)  # rejected proposal ids
    added: list[Instance] = field(default_factory=list)  # drawn by hand (or boxed)


class Assists(Protocol):
    """The assists the simulated annotator can ask for on one image."""

    def box(self, truth: Instance) -> Instance | None:
        """The answer to a box dragged around ``truth`` (None: no object found)."""

    def refine(self, proposal: Instance, truth: Instance) -> Instance | None:
        """``proposal``'s outline predicted again from a box dragged around ``truth``, the
        object it should outline (None: no object found)."""


def jittered_box(
    bbox: tuple[float, float, float, float], rng: np.random.Generator, jitter: float
) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) a person drags around an object with box ``bbox`` (x, y, w,
    h): each side moved in or out by up to ``jitter`` of the box's width or height."""
    x, y, w, h = bbox
    dx0, dy0, dx1, dy1 = rng.uniform(-jitter, jitter, 4)
    return (x + dx0 * w, y + dy0 * h, x + w + dx1 * w, y + h + dy1 * h)


class SimulatedAssists:
    """The app's assists on one image, with boxes dragged as loosely as a person does."""

    def __init__(
        self,
        assistant: Assistant,
        image: np.ndarray,
        *,
        image_key: Hashable,
        rng: np.random.Generator,
        jitter: float = BOX_JITTER,
    ) -> None:
        self.assistant = assistant
        self.image = image
        self.image_key = image_key
        self.rng = rng
        self.jitter = jitter

    def box(self, truth: Instance) -> Instance | None:
        box = jittered_box(polygons_bbox(truth.polygons), self.rng, self.jitter)
        try:
            return self.assistant.box_to_mask(
                self.image, box, image_key=self.image_key, category_id=truth.category_id
            )
        except NoObjectFound:
            return None

    def refine(self, proposal: Instance, truth: Instance) -> Instance | None:
        # Not W (the proposal's own box again): on real and synthetic nuclei a new box
        # fixes about twice as many poor outlines (docs/notes/assists.md).
        answer = self.box(truth)
        if answer is not None:
            answer.id, answer.category_id = proposal.id, proposal.category_id
        return answer


def _rles(instances: Sequence[Instance], height: int, width: int) -> list[dict]:
    if not instances:
        return []
    masks = np.stack([polygons_to_mask(i.polygons, height, width) for i in instances])
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _records(instances: Sequence[Instance], height: int, width: int) -> list[dict]:
    """Instances as the records :func:`greedy_matches` compares (RLE, category, score)."""
    return [
        {"segmentation": rle, "category_id": inst.category_id, "score": inst.score or 0.0}
        for inst, rle in zip(instances, _rles(instances, height, width), strict=True)
    ]


def _iou(a: Instance | None, b: Instance, height: int, width: int) -> float:
    """Mask IoU of two instances (0 for a missing answer)."""
    if a is None:
        return 0.0
    return float(
        np.asarray(mask_utils.iou(_rles([a], height, width), _rles([b], height, width), [0]))[0, 0]
    )


def review(
    proposals: Sequence[Instance],
    truth: Sequence[Instance],
    height: int,
    width: int,
    *,
    accept_iou: float = ACCEPT_IOU,
    edit_iou: float = EDIT_IOU,
    assists: Assists | None = None,
) -> Review:
    """How the simulated annotator treats ``proposals`` on an image whose truth it knows.

    Proposals must carry their store ids (except in pure counting use); edited ones get the
    truth outline and ``source=model_edited``, missed truth instances are drawn as
    ``source=human``. With ``assists`` a poor proposal is refined and a missed instance
    boxed first (see the module's cost model); an answer that reaches ``accept_iou`` is
    kept as the model gave it, provenance ``assisted``.
    """
    order = sorted(range(len(proposals)), key=lambda i: -(proposals[i].score or 0.0))
    match = {
        i: (k, iou)
        for i, k, iou in greedy_matches(
            _records(proposals, height, width), _records(truth, height, width), min_iou=edit_iou
        )
    }
    matched = np.zeros(len(truth), dtype=bool)
    matched[[k for k, _ in match.values()]] = True
    out = Review(ReviewCounts(instances=len(truth)))
    counts = out.counts
    for proposal, (best, best_iou) in ((proposals[i], match.get(i, (-1, -1.0))) for i in order):
        if best_iou >= accept_iou:
            counts.accepted += 1
            out.kept.append(proposal)
        elif best_iou >= edit_iou:
            fixed = proposal.copy()
            fixed.source = Source.MODEL_EDITED
            answer = assists.refine(proposal, truth[best]) if assists is not None else None
            answer_iou = _iou(answer, truth[best], height, width) if answer else 0.0
            if answer is not None and answer_iou >= accept_iou:
                counts.refined += 1
                fixed.polygons = answer.polygons
                fixed.provenance = Provenance.ASSISTED
            else:
                if answer is not None and answer_iou >= edit_iou:
                    counts.refine_edited += 1
                else:
                    counts.refine_failed += assists is not None
                counts.edited += 1
                fixed.polygons = [p.copy() for p in truth[best].polygons]
                fixed.provenance = Provenance.EDITED
            out.updated.append(fixed)
        else:
            counts.rejected += 1
            if proposal.id is not None:
                out.deleted.append(proposal.id)
    for k, t in enumerate(truth):
        cost = draw_ops(t.polygons)
        counts.manual_ops += cost
        if matched[k]:
            continue
        answer = assists.box(t) if assists is not None else None
        answer_iou = _iou(answer, t, height, width) if answer else 0.0
        if answer is not None and answer_iou >= edit_iou:
            kept = answer_iou >= accept_iou
            counts.boxed += kept
            counts.box_edited += not kept
            out.added.append(
                Instance(
                    t.category_id,
                    answer.polygons if kept else [p.copy() for p in t.polygons],
                    source=Source.HUMAN,
                    provenance=Provenance.ASSISTED if kept else Provenance.EDITED,
                )
            )
            continue
        counts.box_failed += assists is not None
        counts.drawn += 1
        counts.draw_ops += cost
        out.added.append(
            Instance(t.category_id, [p.copy() for p in t.polygons], source=Source.HUMAN)
        )
    return out


def apply_review(store: ProjectStore, image_id: int, result: Review) -> None:
    """Store the annotator's edits and mark the image done, in one transaction."""
    store.apply_edit(
        image_id,
        add=result.added,
        update=result.updated,
        delete=result.deleted,
        status=ImageStatus.DONE,
    )


# -- the loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    """Sizes and training options of a simulated loop; the defaults fit a CPU in minutes."""

    image_size: int = 160
    pool_images: int = 24
    test_images: int = 8
    per_round: int = 4
    iterations: int = 40  # training iterations per round (unless ``epochs``)
    # Passes over every done image per round, like the app's Train dialog (10 epochs there,
    # over the done images less a validation share), so later rounds train longer;
    # None: ``iterations`` steps a round.
    epochs: int | None = None
    batch_size: int = FINE_TUNE_BATCH_SIZE
    # `maskloop train`'s default. On the shifted project 1e-3 fell far below the starting AP
    # after one round (0.21 -> 0.11, 30 steps on 4 images); with 8 images a round 3e-4 rose
    # every round (0.20/0.22/0.23/0.24) where 1e-4 stalled after the first.
    lr: float = FINE_TUNE_LR
    warmup_iters: int = 5
    # Keep the base model's BatchNorm statistics (as `maskloop train` does): measured on the
    # shifted project, updating them from batches of 2 lowered AP after every round.
    freeze_bn_stats: bool = True
    threshold: float = 0.5  # proposals shown to the annotator score at least this
    max_detections: int = 200
    n_cells: tuple[int, int] = (8, 30)
    cell_radius: tuple[float, float] = (5.0, 12.0)
    # The project's images come from another microscope than the bundled model's training
    # data (None: the generator's defaults, which the bundled model already knows).
    regime: Regime | None = OTHER_MICROSCOPE
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.per_round < 1 or self.pool_images < self.per_round:
            raise LoopSimError(
                f"per_round={self.per_round} must be >= 1 and <= pool_images={self.pool_images}."
            )
        if self.test_images < 1 or self.iterations < 1:
            raise LoopSimError("test_images and iterations must be at least 1.")
        if self.epochs is not None and self.epochs < 1:
            raise LoopSimError("epochs must be at least 1 (or None for a fixed step count).")

    @property
    def spec(self) -> InputSpec:
        """Native scale: the model resizes nothing (its own resize bounds are the image size)."""
        return InputSpec(min_size=self.image_size, max_size=self.image_size)


@dataclass
class RoundResult:
    """One round of one strategy; round 0 is the starting model, before any review.

    ``review`` is what this round's picked images cost to review (None in round 0);
    ``heldout_review`` what the proposals of the round's resulting model would cost on the
    held-out images, ``heldout_assisted`` the same with the model's assists.
    """

    round: int
    strategy: str
    ap: float
    ap50: float
    review: ReviewCounts | None
    heldout_review: ReviewCounts
    labeled_images: int
    model_version: int | None
    heldout_assisted: ReviewCounts = field(default_factory=ReviewCounts)
    propose_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    iterations: int = 0


def _sample(config: LoopConfig, seed: int) -> SyntheticSample:
    size = (config.image_size, config.image_size)
    return generate_sample(
        seed,
        size=size,
        n_cells=config.n_cells,
        cell_radius=config.cell_radius,
        bit_depth=8,
        regime=config.regime,
    )


@dataclass
class HeldOut:
    """The fixed test images: model inputs with targets (for AP) and the pixels with their
    truth outlines (for the review cost of the proposals)."""

    truth_images: list[EvalImage]
    images: list[np.ndarray]
    outlines: list[list[list[Polygon]]]  # per image, per instance: its polygons

    def truth(self, category_id: int) -> list[list[Instance]]:
        """Each image's truth as instances of ``category_id``."""
        return [
            [Instance(category_id, [p.copy() for p in polys]) for polys in image]
            for image in self.outlines
        ]


@dataclass(frozen=True)
class LabelledImage:
    """A real image file with its instance label map (0 background, 1..N one object each)."""

    path: Path
    image: np.ndarray
    labels: np.ndarray


def read_labelled(image_path: Path, label_path: Path) -> LabelledImage:
    """An image as the app reads it, and its 16-bit label map."""
    labels = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise LoopSimError(f"cannot read the label map {label_path}")
    return LabelledImage(image_path, read_image(image_path), labels)


def dsb_split(
    folder: Path, kind: str, config: LoopConfig
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """A loop on real DSB2018 images (folder with images/, labels/, val.txt, manifest.json):
    ``config.pool_images`` images of ``kind`` (gray or bright) drawn from the training split
    with ``config.seed``, and the first ``config.test_images`` of that kind in val.txt."""
    val = set((folder / "val.txt").read_text().split())
    manifest = json.loads((folder / "manifest.json").read_text())
    names = sorted(e["file"] for e in manifest if e["kind"] == kind)
    train = [n for n in names if n not in val]
    test = [n for n in names if n in val][: config.test_images]
    if len(train) < config.pool_images or not test:
        raise LoopSimError(
            f"{folder} holds {len(train)} training and {len(test)} validation images of kind "
            f"{kind!r}; the loop wants {config.pool_images} and at least one."
        )
    rng = np.random.default_rng(config.seed)
    pool = [train[i] for i in sorted(rng.choice(len(train), config.pool_images, replace=False))]

    def load(names: Sequence[str]) -> list[LabelledImage]:
        return [read_labelled(folder / "images" / n, folder / "labels" / n) for n in names]

    return load(pool), load(test)


def held_out_set(config: LoopConfig, images: Sequence[LabelledImage] | None = None) -> HeldOut:
    """The fixed test images: ``images``, else synthetic ones (their own seed stream);
    label 1 in the truth."""
    out = HeldOut([], [], [])
    pairs = (
        [(im.image, im.labels) for im in images]
        if images is not None
        else [
            (s.image, s.labels)
            for s in (
                _sample(config, sample_seed(config.seed + _TEST_SEED_OFFSET, i))
                for i in range(config.test_images)
            )
        ]
    )
    for image, labels in pairs:
        out.truth_images.append(EvalImage.from_label_map(image, labels))
        out.images.append(image)
        out.outlines.append(list(label_map_to_instances(labels).values()))
    return out


def create_pool_project(
    folder: Path, config: LoopConfig, pool: Sequence[LabelledImage] | None = None
) -> tuple[ProjectStore, dict[int, list[Instance]]]:
    """A new project (status new) and its hidden truth per image id: of ``pool``'s images,
    used where they are, else of synthetic images written into the project."""
    if pool is not None:
        return _real_pool_project(folder, pool)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth_by_path: dict[str, list[list[Polygon]]] = {}
    rows = []
    for i in range(config.pool_images):
        s = _sample(config, sample_seed(config.seed, i))
        path = f"images/pool_{i:04d}.png"
        if not cv2.imwrite(str(folder / path), s.image):
            raise LoopSimError(f"cannot write {folder / path}; is the disk full?")
        truth_by_path[path] = list(label_map_to_instances(s.labels).values())
        rows.append(NewImage(path, config.image_size, config.image_size))
    store = ProjectStore.create(folder)
    category = store.add_category(CATEGORY)
    store.add_images(rows)
    truth = {
        rec.id: [Instance(category.id, polys) for polys in truth_by_path[rec.path]]
        for rec in store.images()
    }
    return store, truth


def _real_pool_project(
    folder: Path, pool: Sequence[LabelledImage]
) -> tuple[ProjectStore, dict[int, list[Instance]]]:
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    truth_by_path = {
        Path(os.path.relpath(im.path.resolve(), root)).as_posix(): list(
            label_map_to_instances(im.labels).values()
        )
        for im in pool
    }
    store = ProjectStore.create(folder)
    category = store.add_category(CATEGORY)
    store.add_images(
        NewImage(path, im.image.shape[1], im.image.shape[0])
        for path, im in zip(truth_by_path, pool, strict=True)
    )
    truth = {
        rec.id: [Instance(category.id, polys) for polys in truth_by_path[rec.path]]
        for rec in store.images()
    }
    return store, truth


def base_model(
    name: str, config: LoopConfig, *, native: bool = True, weights: Path | None = None
) -> tuple[zoo.ModelCard, nn.Module]:
    """The starting model and its card, at the loop's native input size (``native=False``:
    a zoo card keeps its own input size, e.g. for real images of several sizes).

    ``name`` is a zoo card id (e.g. cells-mobile) or :data:`RANDOM_BASE` for the mobile
    architecture with random weights. ``weights``: a weights file of the card's
    architecture to start from instead of the card's own (e.g. an earlier version of it).
    """
    spec = config.spec
    if name == RANDOM_BASE and weights is not None:
        raise LoopSimError("weights need a zoo card to describe them, not the random base.")
    if name == RANDOM_BASE:
        card = zoo.ModelCard(
            id="mobile-random",
            title="maskrcnn_mobilenet_v3_fpn, random weights",
            architecture="maskrcnn_mobilenet_v3_fpn",
            categories=[Category(1, CATEGORY)],
            weights=zoo.WeightsSource(file="mobile-random.pt"),
            input=spec,
            detections_per_img=config.max_detections,
        )
        torch.manual_seed(config.seed)
        model = build_model(
            card.architecture,
            num_classes=2,
            min_size=spec.min_size,
            max_size=spec.max_size,
            detections_per_img=config.max_detections,
        )
        return card, model
    card = zoo.get_card(name)
    if weights is not None:
        folder = weights.resolve().parent  # the card looks its weights up beside itself
        card = dataclasses.replace(
            card, path=folder / f"{card.id}.json", weights=zoo.WeightsSource(file=weights.name)
        )
    if card.num_classes != 2:
        raise LoopSimError(f"the loop simulates one category; {name} has {card.num_classes - 1}.")
    card = dataclasses.replace(
        card,
        input=dataclasses.replace(card.input, min_size=spec.min_size, max_size=spec.max_size)
        if native
        else card.input,
        detections_per_img=config.max_detections,
    )
    return card, zoo.load_model(card)


class LoopSimulation:
    """One strategy's project and model, advanced one round at a time by :meth:`run_round`."""

    def __init__(
        self,
        folder: Path,
        strategy: Strategy | str,
        config: LoopConfig,
        card: zoo.ModelCard,
        model: nn.Module,
        test_set: HeldOut,
        pool: Sequence[LabelledImage] | None = None,
    ) -> None:
        self.strategy = Strategy(strategy)
        self.config = config
        self.card = card
        self.model = model
        self.test_set = test_set
        self.test_truth = test_set.truth(card.category_for_label(1).id)
        self.store, self.truth = create_pool_project(folder, config, pool)
        self.category = self.store.categories()[0]
        self.version: int | None = None
        self.round = 0

    def close(self) -> None:
        self.store.close()

    def evaluate(self) -> tuple[float, float, ReviewCounts, ReviewCounts]:
        """Segm (AP, AP50) of the current model on the held-out set, and what reviewing its
        proposals there (score >= the loop's threshold) would cost without and with its
        assists (the same proposals; boxes dragged the same way every round)."""
        threshold = self.config.threshold
        result = evaluate_predictor(self._predictor(AP_SCORE_FLOOR), self.test_set.truth_images)
        # As proposing does: detect down to the uncertainty floor, show those >= threshold.
        predictor = self._predictor(detection_threshold(threshold))
        assistant = Assistant(predictor)
        counts = ReviewCounts()
        assisted = ReviewCounts()
        for k, (image, truth) in enumerate(zip(self.test_set.images, self.test_truth, strict=True)):
            shown = [d for d in predictor.predict(image) if (d.score or 0.0) >= threshold]
            h, w = image.shape[:2]
            counts = counts + review(shown, truth, h, w).counts
            assists = SimulatedAssists(
                assistant,
                image,
                image_key=k,
                rng=np.random.default_rng([self.config.seed, _TEST_SEED_OFFSET, k]),
            )
            assisted = assisted + review(shown, truth, h, w, assists=assists).counts
        return result.segm.ap, result.segm.ap50, counts, assisted

    def start(self) -> RoundResult:
        """Round 0: the starting model on the held-out set."""
        t0 = time.perf_counter()
        ap, ap50, heldout, assisted = self.evaluate()
        return RoundResult(
            0,
            self.strategy.value,
            ap,
            ap50,
            None,
            heldout,
            0,
            None,
            heldout_assisted=assisted,
            eval_s=time.perf_counter() - t0,
        )

    def _predictor(self, score_threshold: float) -> Predictor:
        cfg = self.config
        return Predictor.from_model(
            self.model,
            self.card,
            device=cfg.device,
            score_threshold=score_threshold,
            max_detections=cfg.max_detections,
            model_version=self.version,
        )

    def _propose(self, images: Sequence[ImageRecord]) -> None:
        cfg = self.config
        predictor = self._predictor(detection_threshold(cfg.threshold))
        model_id = self.card.id if self.version is None else f"v{self.version}"
        for outcome in propose_images(
            self.store,
            predictor,
            self.card,
            images,
            model_id=model_id,
            model_version=self.version,
            threshold=cfg.threshold,
        ):
            if outcome.error:
                raise LoopSimError(f"cannot propose {outcome.image.path}: {outcome.error}")

    def pick(self) -> list[ImageRecord]:
        """Propose and choose this round's images (uncertainty needs every candidate scored)."""
        n = self.config.per_round
        seed = self.config.seed + self.round
        if self.strategy is Strategy.UNCERTAINTY:
            # Scored even at the cold start, whose seeded sample then equals random's.
            self._propose(self.store.images(status=CANDIDATE_STATUSES))
            return next_images(self.store, n, Strategy.UNCERTAINTY, seed=seed)
        picked = next_images(self.store, n, Strategy.RANDOM, seed=seed)
        self._propose(picked)
        return picked

    def run_round(self) -> RoundResult:
        """Pick, review, train and evaluate once; returns the round's figures."""
        if not self.store.count_images(CANDIDATE_STATUSES):
            raise LoopSimError("every pool image is annotated; add pool images or rounds.")
        self.round += 1
        t0 = time.perf_counter()
        picked = self.pick()
        propose_s = time.perf_counter() - t0
        counts = ReviewCounts()
        for image in picked:
            result = review(
                self.store.instances(image.id), self.truth[image.id], image.height, image.width
            )
            apply_review(self.store, image.id, result)
            counts = counts + result.counts
        done = [im.id for im in self.store.images(status=ImageStatus.DONE)]
        t0 = time.perf_counter()
        iterations = self._train(done)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ap, ap50, heldout, assisted = self.evaluate()
        eval_s = time.perf_counter() - t0
        version = register_version(
            self.store,
            self.model,
            self.card,
            parent_id=self.version,
            categories=[self.category],
            metrics={"segm_AP": ap, "segm_AP50": ap50},
            images_used=len(done),
            name=f"{self.strategy.value} round {self.round}",
        )
        self.version = version.id
        log.info(
            "%s round %d: %d images labelled, segm AP %.3f, %.2f ops/instance reviewed, "
            "%.2f on the held-out images (%.2f with assists)",
            self.strategy.value,
            self.round,
            len(done),
            ap,
            counts.ops_per_instance or 0.0,
            heldout.ops_per_instance or 0.0,
            assisted.ops_per_instance or 0.0,
        )
        return RoundResult(
            self.round,
            self.strategy.value,
            ap,
            ap50,
            counts,
            heldout,
            len(done),
            version.id,
            heldout_assisted=assisted,
            propose_s=propose_s,
            train_s=train_s,
            eval_s=eval_s,
            iterations=iterations,
        )

    def _train(self, image_ids: list[int]) -> int:
        cfg = self.config
        dataset = ProjectDataset(
            self.store,
            image_ids,
            category_labels([self.category.id]),
            self.card.input,
            train=True,
        )
        config = TrainConfig(
            epochs=cfg.epochs or cfg.iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            warmup_iters=cfg.warmup_iters,
            device=cfg.device,
            seed=cfg.seed + self.round,
            max_iters=None if cfg.epochs else cfg.iterations,
            freeze_bn_stats=cfg.freeze_bn_stats,
        )
        iterations = 0
        for event in train(self.model, dataset, config):
            if isinstance(event, FinishedEvent):
                iterations = event.iterations
        return iterations
