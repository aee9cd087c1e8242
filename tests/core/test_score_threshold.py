"""The one score threshold: saved in the project, old projects migrated, exports follow it."""

from __future__ import annotations

import json

import pytest

from app.core.coco import export_coco
from app.core.score_threshold import (
    FLOOR_KEY,
    LEGACY_STORE_KEY,
    SCORE_FLOOR,
    ScoreThresholdError,
    exported_instances,
    migrate_score_floor,
    project_threshold,
    set_project_threshold,
)
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon


def _square(x: float) -> Polygon:
    return Polygon([[x, 2], [x + 8, 2], [x + 8, 10], [x, 10]])


@pytest.fixture
def store(tmp_path):
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        s.add_category("cell")
        s.add_images([NewImage(f"{k}.png", 64, 64) for k in range(3)])
        yield s


def _propose(store, image_id, scores, model="m"):
    proposals = [Instance(1, [_square(4 + 12 * k)], score=sc) for k, sc in enumerate(scores)]
    store.replace_proposals(image_id, proposals, model_version=None)
    store.set_proposed_by(image_id, model)


def test_the_threshold_is_saved_in_the_project_and_checked(store):
    assert project_threshold(store) == 0.5
    assert set_project_threshold(store, 0.333) == 0.33
    assert project_threshold(store) == 0.33
    with pytest.raises(ScoreThresholdError, match="between 0.05 and 1"):
        set_project_threshold(store, 0.01)
    store.set_meta("score_threshold", "nonsense")
    assert project_threshold(store) == 0.5


def test_an_old_project_keeps_what_it_showed_and_is_proposed_again(store):
    store.set_meta(LEGACY_STORE_KEY, "0.70")  # the old Model dock's store score
    _propose(store, 1, [0.9])
    _propose(store, 2, [0.8])
    store.add_instances(2, [Instance(1, [_square(40)])])  # a person's work: left alone
    assert migrate_score_floor(store, shown=0.6) == 1
    assert project_threshold(store) == 0.7  # the higher of the two old thresholds
    assert store.image(1).proposed_by is None  # proposed again down to the floor
    assert store.image(1).status is ImageStatus.PROPOSED
    assert [i.score for i in store.instances(1)] == [0.9]  # shown as before until then
    assert store.get_meta(FLOOR_KEY) == f"{SCORE_FLOOR:.2f}"
    assert migrate_score_floor(store, shown=0.9) == 0  # once only
    assert project_threshold(store) == 0.7


def test_a_new_project_is_migrated_to_the_default(store):
    assert migrate_score_floor(store) == 0
    assert project_threshold(store) == 0.5


def test_exports_leave_out_the_proposals_hidden_below_the_threshold(store, tmp_path):
    _propose(store, 1, [0.9, 0.4, 0.1])
    low = next(i.id for i in store.instances(1) if i.score == 0.1)
    store.set_accepted([low], True)  # accepted: exported whatever its score
    set_project_threshold(store, 0.5)
    assert sorted(i.score for i in exported_instances(store, 1, 0.5)) == [0.1, 0.9]
    out = tmp_path / "proposed.json"
    report = export_coco(store, out, statuses=[ImageStatus.PROPOSED])
    assert report.instances == 2 and len(json.loads(out.read_text())["annotations"]) == 2
    set_project_threshold(store, 0.3)
    report = export_coco(store, out, statuses=[ImageStatus.PROPOSED], overwrite=True)
    assert report.instances == 3


def test_hidden_proposals_discarded_by_the_done_rule_are_no_rejections(store):
    from app.core.document import Edit, ImageDocument

    _propose(store, 1, [0.9, 0.6, 0.1])
    by_score = {i.score: i.id for i in store.instances(1)}
    assert [o.pending for o in store.proposal_outcomes(min_score=0.5)] == [2]  # 0.1 hidden
    doc = ImageDocument(store, 1)
    doc.reject([by_score[0.6]])  # a shown proposal the reviewer rejected
    inverse = doc.apply(
        Edit(status=ImageStatus.DONE, accept=[by_score[0.9]], discard=[by_score[0.1]])
    )
    (outcome,) = store.proposal_outcomes(min_score=0.5)
    assert (outcome.accepted, outcome.rejected, outcome.pending) == (1, 1, 0)
    doc.apply(inverse)  # undo brings the hidden one back, still pending
    assert sorted(i.score for i in store.instances(1)) == [0.1, 0.9]
    assert store.proposal_outcomes(min_score=0.0)[0].pending == 2
