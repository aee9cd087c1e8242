import numpy as np
import pytest

from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus
from app.ml.active import (
    DEFAULT_FLOOR,
    expected_corrections,
    image_uncertainty,
    next_images,
    object_leaders,
)

# Crafted proposal sets (detection scores per image), named by what a reviewer would face.
CROWDED_AND_DOUBTFUL = [0.95, 0.6, 0.55, 0.45, 0.4, 0.3, 0.7]
ONE_BORDERLINE = [0.5]
CONFIDENT = [0.99, 0.98, 0.97, 0.99, 0.02]
NOTHING_SEEN = [0.04, 0.01]


def test_expected_corrections_is_the_chance_of_a_wrong_call():
    e = expected_corrections(np.array([0.0, 0.2, 0.5, 0.9, 1.0, 1.3, -0.1]))
    np.testing.assert_allclose(e, [0.0, 0.2, 0.5, 0.1, 0.0, 0.0, 0.0])
    s = np.linspace(0, 1, 11)
    np.testing.assert_allclose(expected_corrections(s), expected_corrections(1 - s))


def test_image_uncertainty_sums_detections_above_the_floor():
    assert image_uncertainty([0.9, 0.3]) == pytest.approx(0.1 + 0.3)
    assert image_uncertainty([0.9, 0.3, DEFAULT_FLOOR / 2]) == image_uncertainty([0.9, 0.3])
    assert image_uncertainty([0.2], floor=0.25) == 0.0
    assert image_uncertainty(NOTHING_SEEN) == 0.0
    assert image_uncertainty([]) == 0.0


def test_each_doubtful_instance_adds_and_confident_ones_do_not_dilute():
    one = image_uncertainty([0.5])
    assert image_uncertainty([0.5, 0.5]) == pytest.approx(2 * one)
    # A mean would halve the score here; the expected corrections hardly move.
    assert image_uncertainty([0.5, 0.999]) == pytest.approx(one + 0.001)


def test_more_to_correct_ranks_first():
    scores = [image_uncertainty(s) for s in (CROWDED_AND_DOUBTFUL, ONE_BORDERLINE, CONFIDENT)]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 2 * scores[1]


def test_fragments_of_one_object_count_once():
    cell = [10, 10, 40, 40]
    fragment = [12, 30, 22, 40]  # inside the cell: low IoU, but covered
    other = [60, 10, 90, 40]
    scores = [0.9, 0.3, 0.4]
    boxes = [cell, fragment, other]
    # The fragment costs the reviewer nothing: the cell is already proposed.
    assert image_uncertainty(scores, boxes) == pytest.approx(0.1 + 0.4)
    assert image_uncertainty(scores) == pytest.approx(0.1 + 0.3 + 0.4)
    # A doubtful cell whose best detection is doubtful stays doubtful.
    assert image_uncertainty([0.45, 0.2], [cell, fragment]) == pytest.approx(0.45)
    # Below the floor nothing counts, grouped or not.
    assert image_uncertainty([0.9, 0.01], [cell, other]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="2 scores but 1 boxes"):
        image_uncertainty([0.5, 0.5], [cell])


def test_object_leaders_fold_covered_boxes_greedily():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 30, 30], [2, 2, 8, 8], [100, 100, 110, 110]], float)
    scores = np.array([0.2, 0.9, 0.8, 0.1])
    # The big box leads and covers both small ones (each lies inside it); the far one is alone.
    assert object_leaders(boxes, scores).tolist() == [1, 3]
    assert object_leaders(np.zeros((0, 4)), np.zeros(0)).tolist() == []


@pytest.fixture
def store(tmp_path):
    s = ProjectStore.open(tmp_path / "p", create=True)
    s.add_images([NewImage(f"{i}.png", 8, 8) for i in range(6)])
    yield s
    s.close()


def test_next_images_orders_crafted_proposal_sets(store):
    for image_id, scores in [
        (1, CONFIDENT),
        (2, ONE_BORDERLINE),
        (3, NOTHING_SEEN),
        (4, CROWDED_AND_DOUBTFUL),
    ]:
        store.set_uncertainty(image_id, image_uncertainty(scores))
    order = [4, 2, 1, 3, 5, 6]  # 5, 6 unscored
    assert [r.id for r in next_images(store, 6, use_cold_start=False)] == order
    # Nothing done yet: the uncertainty strategy gives random's seeded sample instead.
    cold = [r.id for r in next_images(store, 6, seed=3)]
    assert cold == [r.id for r in next_images(store, 6, "random", seed=3)] != order
    store.add_images([NewImage("labelled.png", 8, 8)])
    store.set_image_status(7, ImageStatus.DONE)
    assert [r.id for r in next_images(store, 6)] == order


def test_next_images_uncertainty_order_skips_worked_on_images(store):
    for image_id, u in [(1, 0.2), (2, 3.5), (3, 0.5), (4, 4.0)]:
        store.set_uncertainty(image_id, u)
    store.set_image_status(4, ImageStatus.DONE)
    store.set_image_status(3, ImageStatus.PROPOSED)
    picked = [r.id for r in next_images(store, 4)]
    assert picked == [2, 3, 1, 5]  # 4 is done; 5 and 6 have no score yet (path order)


def test_next_images_random_is_seeded(store):
    a = [r.id for r in next_images(store, 6, "random", seed=1)]
    store.set_uncertainty(2, 5.0)  # scores do not move a random sample
    b = [r.id for r in next_images(store, 6, "random", seed=1)]
    assert a == b and sorted(a) == [1, 2, 3, 4, 5, 6]
    assert next_images(store, 0) == []


def test_expected_corrections_follow_the_score_threshold():
    # Shown (at or above the threshold): rejecting it is the correction; hidden: drawing it.
    np.testing.assert_allclose(expected_corrections([0.3, 0.6], threshold=0.2), [0.7, 0.4])
    np.testing.assert_allclose(expected_corrections([0.3, 0.6], threshold=0.7), [0.3, 0.6])
    assert image_uncertainty([0.9, 0.3], threshold=0.2) == pytest.approx(0.1 + 0.7)


def test_rescoring_uses_the_stored_proposals_of_untouched_images(tmp_path):
    from app.core.types import Instance, Polygon
    from app.ml.active import rescore_uncertainty

    def square(x):
        return Polygon([[x, 0], [x + 8, 0], [x + 8, 8], [x, 8]])

    with ProjectStore.open(tmp_path / "p", create=True) as store:
        store.add_category("cell")
        store.add_images([NewImage(f"{k}.png", 64, 64) for k in range(3)])
        for image_id in (1, 2, 3):
            proposals = [Instance(1, [square(0)], score=0.9), Instance(1, [square(20)], score=0.3)]
            store.replace_proposals(image_id, proposals, model_version=None)
            store.set_uncertainty(image_id, 0.4)
            store.set_proposed_by(image_id, "m")
        store.set_proposed_by(2, None)  # waiting to be proposed again: its figure stays
        store.add_instances(3, [Instance(1, [square(40)])])  # a person's work: left alone
        assert rescore_uncertainty(store, 0.2) == 1
        assert store.image(1).uncertainty == pytest.approx(0.1 + 0.7)
        assert store.image(2).uncertainty == store.image(3).uncertainty == 0.4
