"""The simulated annotator on a scripted case, and one tiny loop round end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from loop_sim import (
    _TEST_SEED_OFFSET,
    BOX_JITTER,
    RANDOM_BASE,
    LoopConfig,
    LoopSimError,
    LoopSimulation,
    ReviewCounts,
    apply_review,
    base_model,
    draw_ops,
    dsb_split,
    held_out_set,
    jittered_box,
    review,
)

from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Provenance, Source
from app.demo.synthetic import OTHER_MICROSCOPE, generate_sample, sample_seed
from app.ml.active import Strategy

SIZE = 96


def _box(x0: float, y0: float, x1: float, y1: float) -> list[Polygon]:
    return [Polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))]


def _octagon(cx: float, cy: float, r: float) -> list[Polygon]:
    angles = np.arange(8) * np.pi / 4
    return [Polygon(np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1))]


TRUTH = [
    Instance(1, _box(5, 5, 25, 25)),  # found exactly: accept
    Instance(1, _box(40, 5, 60, 25)),  # found shifted by 5 px (IoU ~0.6): edit
    Instance(1, _box(5, 40, 25, 60)),  # missed: draw (4 vertices)
    Instance(1, _octagon(60, 60, 10)),  # missed: draw (8 vertices)
]


def _proposals() -> list[Instance]:
    return [
        Instance(1, _box(45, 5, 65, 25), score=0.8, source=Source.MODEL),
        Instance(1, _box(5, 5, 25, 25), score=0.9, source=Source.MODEL),
        Instance(1, _box(70, 5, 90, 25), score=0.7, source=Source.MODEL),  # nothing there
        Instance(1, _box(6, 5, 25, 25), score=0.6, source=Source.MODEL),  # duplicate
    ]


def test_draw_cost_is_one_op_plus_one_per_four_vertices() -> None:
    assert draw_ops(_box(0, 0, 5, 5)) == 2
    assert draw_ops(_octagon(20, 20, 5)) == 3
    assert draw_ops(_box(0, 0, 5, 5) + _octagon(20, 20, 5)) == 4  # 12 vertices


def test_scripted_review_counts_and_ops() -> None:
    result = review(_proposals(), TRUTH, SIZE, SIZE)
    c = result.counts
    assert (c.accepted, c.edited, c.rejected, c.drawn) == (1, 1, 2, 2)
    assert c.instances == 4
    assert c.draw_ops == 2 + 3
    assert c.ops == 1 + 3 + 2 * 1 + 5
    assert c.manual_ops == 2 + 2 + 2 + 3
    assert c.ops_per_instance == pytest.approx(11 / 4)
    assert c.manual_ops_per_instance == pytest.approx(9 / 4)
    # The better-scored of two proposals on one cell is kept; the other is the duplicate.
    assert [p.score for p in result.kept] == [0.9]
    assert result.updated[0].polygons == TRUTH[1].polygons
    assert [a.polygons for a in result.added] == [TRUTH[2].polygons, TRUTH[3].polygons]


class ScriptedAssists:
    """Boxes give the truth on the left half of the image, nothing on the right; a refine
    gives its proposal back unchanged (still poor: IoU about 0.6)."""

    def box(self, truth: Instance) -> Instance | None:
        x = truth.polygons[0].exterior[:, 0].mean()
        return truth.copy() if x < SIZE / 2 else None

    def refine(self, proposal: Instance, truth: Instance) -> Instance | None:
        return proposal.copy()


class TruthRefines(ScriptedAssists):
    """A refine that finds the truth outline of the cell shifted right by 5 px."""

    def refine(self, proposal: Instance, truth: Instance) -> Instance | None:
        assert truth.polygons == TRUTH[1].polygons  # the box is dragged around this one
        return TRUTH[1].copy()


class LostRefines(ScriptedAssists):
    """A refine that finds no object."""

    def refine(self, proposal: Instance, truth: Instance) -> Instance | None:
        return None


def test_assists_answers_are_reviewed_like_proposals() -> None:
    plain = review(_proposals(), TRUTH, SIZE, SIZE).counts
    result = review(_proposals(), TRUTH, SIZE, SIZE, assists=ScriptedAssists())
    c = result.counts
    # The same proposals are accepted and rejected; the square on the left is boxed and
    # kept, the octagon on the right drawn after a box that found nothing; the refine's
    # answer is as poor as the proposal, so it is edited.
    assert (c.accepted, c.rejected) == (plain.accepted, plain.rejected) == (1, 2)
    assert (c.boxed, c.box_edited, c.box_failed, c.drawn, c.draw_ops) == (1, 0, 1, 1, 3)
    assert (c.refined, c.refine_edited, c.refine_failed, c.edited) == (0, 1, 0, 1)
    accept, rejects, box_kept, box_undone, refine_edited = 1, 2, 1 + 1, 1 + 1 + 3, 1 + 3
    assert c.ops == accept + rejects + box_kept + box_undone + refine_edited == 14
    boxed = next(a for a in result.added if a.provenance == Provenance.ASSISTED)
    assert boxed.polygons == TRUTH[2].polygons and boxed.source == Source.HUMAN
    good = review(_proposals(), TRUTH, SIZE, SIZE, assists=TruthRefines())
    assert (good.counts.refined, good.counts.refine_edited, good.counts.edited) == (1, 0, 0)
    assert good.counts.ops == c.ops - 3
    assert [u.provenance for u in good.updated] == [Provenance.ASSISTED]
    lost = review(_proposals(), TRUTH, SIZE, SIZE, assists=LostRefines()).counts
    assert (lost.refine_failed, lost.edited, lost.ops) == (1, 1, c.ops + 1)  # and an undo
    assert plain.ops == 11


def test_a_dragged_box_misses_each_side_by_up_to_the_jitter() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([jittered_box((10, 20, 40, 20), rng, BOX_JITTER) for _ in range(500)])
    exact = np.array([10, 20, 50, 40])
    size = np.array([40, 20, 40, 20])
    moved = (boxes - exact) / size
    assert np.abs(moved).max() <= BOX_JITTER
    assert np.abs(moved).max(axis=0).min() > 0.9 * BOX_JITTER  # every side moves, in and out
    assert (moved < 0).any(axis=0).all() and (moved > 0).any(axis=0).all()
    again = np.random.default_rng(0)
    assert jittered_box((10, 20, 40, 20), again, BOX_JITTER) == tuple(boxes[0])


def test_review_without_proposals_draws_everything() -> None:
    c = review([], TRUTH, SIZE, SIZE).counts
    assert (c.accepted, c.edited, c.rejected, c.drawn) == (0, 0, 0, 4)
    assert c.ops == c.manual_ops == 9
    total = c + review(_proposals(), TRUTH, SIZE, SIZE).counts
    assert (total.drawn, total.instances, total.ops) == (6, 8, 20)
    assert ReviewCounts().ops_per_instance is None


def test_applied_review_leaves_the_truth_in_the_store(tmp_path: Path) -> None:
    with ProjectStore.create(tmp_path / "p") as store:
        category = store.add_category("nucleus")
        (image_id,) = store.add_images([NewImage("a.png", SIZE, SIZE)])
        assert store.replace_proposals(image_id, _proposals(), model_version=None)
        result = review(store.instances(image_id), TRUTH, SIZE, SIZE)
        assert len(result.deleted) == 2
        apply_review(store, image_id, result)
        assert store.image(image_id).status is ImageStatus.DONE
        stored = store.instances(image_id)
        assert sorted(i.source for i in stored) == sorted(
            [Source.MODEL, Source.MODEL_EDITED, Source.HUMAN, Source.HUMAN]
        )
        assert all(i.category_id == category.id for i in stored)
        (outcome,) = store.proposal_outcomes()
        assert (outcome.accepted, outcome.edited, outcome.rejected, outcome.added_by_hand) == (
            1,
            1,
            2,
            2,
        )


def test_config_refuses_a_budget_larger_than_the_pool() -> None:
    with pytest.raises(LoopSimError, match="per_round"):
        LoopConfig(pool_images=2, per_round=3)
    with pytest.raises(LoopSimError, match="epochs"):
        LoopConfig(pool_images=2, per_round=1, epochs=0)


@pytest.fixture
def one_thread():
    """One thread is faster for these tiny tensors on a shared machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_one_tiny_round_end_to_end(tmp_path: Path, one_thread: None) -> None:
    config = LoopConfig(
        image_size=SIZE,
        pool_images=4,
        test_images=1,
        per_round=2,
        iterations=2,
        n_cells=(3, 6),
        cell_radius=(5.0, 8.0),
    )
    card, model = base_model(RANDOM_BASE, config)
    test_set = held_out_set(config)
    test_instances = sum(len(outlines) for outlines in test_set.outlines)
    sim = LoopSimulation(tmp_path / "sim", Strategy.UNCERTAINTY, config, card, model, test_set)
    try:
        start = sim.start()
        assert (start.round, start.labeled_images, start.review) == (0, 0, None)
        # The held-out review covers every held-out instance, found or drawn.
        assert start.heldout_review.instances == test_instances > 0
        result = sim.run_round()
        store = sim.store
        done = store.images(status=ImageStatus.DONE)
        assert result.round == 1 and result.labeled_images == len(done) == 2
        assert result.iterations == 2 and result.model_version == 1
        # Real COCO figures of this round's model: AP averages stricter IoU thresholds
        # than AP50, and the registered version carries the same numbers.
        assert 0.0 <= result.ap <= result.ap50 <= 1.0
        assert store.model_version(1).metrics == {
            "segm_AP": result.ap,
            "segm_AP50": result.ap50,
        }
        # The done images now hold exactly their hidden truth's number of instances.
        truth = sum(len(sim.truth[im.id]) for im in done)
        assert result.review.instances == truth > 0
        assert sum(store.count_instances(im.id) for im in done) == truth
        assert result.review.ops >= truth
        assert result.heldout_review.instances == test_instances
        # With assists the same proposals are reviewed: only the misses and the poor masks
        # are tried with the model first.
        plain, assisted = result.heldout_review, result.heldout_assisted
        assert (assisted.instances, assisted.accepted, assisted.rejected) == (
            plain.instances,
            plain.accepted,
            plain.rejected,
        )
        assert assisted.boxed + assisted.box_edited + assisted.box_failed == plain.drawn
        tried = assisted.refined + assisted.refine_edited + assisted.refine_failed
        assert tried == plain.edited
        assert assisted.drawn == assisted.box_failed
        assert assisted.edited == assisted.refine_edited + assisted.refine_failed
        # Uncertainty ordering scored every candidate while proposing.
        assert all(im.uncertainty is not None for im in store.images())
        version = store.model_version(1)
        assert version.images_used == 2 and version.parent_id is None
        assert (sim.store.root / "models" / "v1.pt").is_file()
    finally:
        sim.close()


def test_the_simulated_project_comes_from_another_microscope() -> None:
    config = LoopConfig(image_size=SIZE, pool_images=2, test_images=1, per_round=1)
    assert config.regime is OTHER_MICROSCOPE
    held_out = held_out_set(config)
    (truth_image,) = held_out.truth_images
    seed = sample_seed(config.seed + _TEST_SEED_OFFSET, 0)
    shifted = generate_sample(
        seed,
        size=(SIZE, SIZE),
        n_cells=config.n_cells,
        cell_radius=config.cell_radius,
        regime=OTHER_MICROSCOPE,
    )
    assert len(truth_image.truth) == shifted.n_instances
    assert np.array_equal(held_out.images[0], shifted.image)
    (truth,) = held_out.truth(category_id=7)
    assert len(truth) == shifted.n_instances and {t.category_id for t in truth} == {7}
    unshifted = held_out_set(dataclasses.replace(config, regime=None)).images[0]
    assert not np.array_equal(held_out.images[0], unshifted)


def test_epochs_train_passes_over_every_done_image(tmp_path: Path, one_thread: None) -> None:
    # As the app's Train dialog: 2 epochs over 2 done images at batch 1 are 4 steps
    # (``iterations`` would be ignored).
    config = LoopConfig(
        image_size=64,
        pool_images=2,
        test_images=1,
        per_round=2,
        iterations=1,
        epochs=2,
        batch_size=1,
        n_cells=(2, 3),
        cell_radius=(5.0, 6.0),
    )
    card, model = base_model(RANDOM_BASE, config)
    sim = LoopSimulation(
        tmp_path / "sim", Strategy.RANDOM, config, card, model, held_out_set(config)
    )
    try:
        assert sim.run_round().iterations == 4
    finally:
        sim.close()


def _fake_dsb(folder: Path, n: int = 5) -> None:
    """A DSB2018-shaped folder: n synthetic images of kind gray, the last two in val.txt,
    and one bright image nobody asks for."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    manifest = []
    for i in range(n + 1):
        sample = generate_sample(sample_seed(5, i), size=(64, 80), n_cells=(2, 4))
        name = f"{i:02d}.png"
        cv2.imwrite(str(folder / "images" / name), sample.image)
        cv2.imwrite(str(folder / "labels" / name), sample.labels)
        kind = "gray" if i < n else "bright"
        manifest.append({"file": name, "kind": kind, "height": 64, "width": 80})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "val.txt").write_text(f"{n - 2:02d}.png\n{n - 1:02d}.png\n")


def test_a_loop_on_real_images_uses_them_where_they_are(tmp_path: Path, one_thread: None) -> None:
    data = tmp_path / "dsb"
    _fake_dsb(data)
    config = LoopConfig(pool_images=2, test_images=5, per_round=1, iterations=1)
    pool, test = dsb_split(data, "gray", config)
    assert [im.path.name for im in test] == ["03.png", "04.png"]  # val.txt, every one asked
    assert len(pool) == 2 and {im.path.name for im in pool} <= {"00.png", "01.png", "02.png"}
    again, _ = dsb_split(data, "gray", config)
    assert [im.path for im in again] == [im.path for im in pool]  # seeded
    with pytest.raises(LoopSimError, match="kind 'bright'"):
        dsb_split(data, "bright", config)
    card, model = base_model(RANDOM_BASE, config, native=False)
    test_set = held_out_set(config, test)
    assert [len(t) for t in test_set.outlines] == [len(np.unique(im.labels)) - 1 for im in test]
    sim = LoopSimulation(tmp_path / "sim", Strategy.RANDOM, config, card, model, test_set, pool)
    try:
        records = sim.store.images()
        assert sorted(sim.store.abspath(r) for r in records) == sorted(
            im.path.resolve() for im in pool
        )
        assert not (tmp_path / "sim" / "images").exists()  # nothing copied
        for record, image in zip(records, sorted(pool, key=lambda im: im.path), strict=True):
            assert len(sim.truth[record.id]) == len(np.unique(image.labels)) - 1
            assert (record.width, record.height) == (80, 64)
        result = sim.run_round()
        assert result.labeled_images == 1
        assert result.heldout_assisted.instances == sum(len(t) for t in test_set.outlines)
    finally:
        sim.close()


def test_the_loop_can_start_from_other_weights_of_a_cards_architecture(tmp_path):
    config = LoopConfig(image_size=64)
    card, model = base_model("cells-mobile", config)
    state = model.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1.0  # weights that differ from the card's
    torch.save(state, tmp_path / "earlier.pt")
    other_card, other = base_model("cells-mobile", config, weights=tmp_path / "earlier.pt")
    assert torch.equal(other.state_dict()[name], state[name])
    assert other_card.id == card.id and other_card.input == card.input
    with pytest.raises(LoopSimError):
        base_model(RANDOM_BASE, config, weights=tmp_path / "earlier.pt")
