"""Which model proposed and scored an image is written with the proposals, or not at all."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.store import NewImage, ProjectStore
from app.core.types import Category, ImageStatus, Instance, Polygon, Source
from app.ml.propose import propose_images, select_images
from app.ml.zoo import ModelCard, WeightsSource

CARD = ModelCard(
    id="fixed",
    title="fixed",
    architecture="maskrcnn_mobilenet_v3_fpn",
    categories=[Category(1, "cell")],
    weights=WeightsSource(file="none.pt"),
)


class FixedPredictor:
    """Two detections on every image."""

    def predict(self, image: object, *, should_stop: object = None) -> list[Instance]:
        ring = np.array([[2, 2], [9, 2], [9, 9], [2, 9]], np.float32)
        return [
            Instance(1, [Polygon(ring + 10 * k)], score=0.9, source=Source.MODEL) for k in (0, 1)
        ]


@pytest.fixture
def store(tmp_path: Path):
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        s.add_category("cell")
        for name in ("a.png", "b.png"):
            cv2.imwrite(str(tmp_path / "p" / name), np.zeros((32, 32), np.uint8))
        s.add_images([NewImage(n, 32, 32) for n in ("a.png", "b.png")])
        yield s


def _propose(store: ProjectStore, images, model_id: str = "m1", **kw) -> list:
    return list(
        propose_images(
            store, FixedPredictor(), CARD, images, model_id=model_id, model_version=None, **kw
        )
    )


def test_proposer_recorded_and_skipped_next_time(store: ProjectStore) -> None:
    _propose(store, select_images(store, "m1").images)
    assert [(i.proposed_by, i.scored_by) for i in store.images()] == [("m1", "m1")] * 2
    again = select_images(store, "m1")
    assert again.images == [] and again.already_proposed == 2
    assert len(select_images(store, "m2").images) == 2


def test_refused_image_gets_no_record(store: ProjectStore) -> None:
    images = select_images(store, "m1").images
    # A person starts on image a after it was chosen: its proposals are refused.
    store.apply_edit(images[0].id, add=[Instance(1, [Polygon([[1, 1], [5, 1], [5, 5]])])])
    outcomes = _propose(store, images)
    assert [o.stored for o in outcomes] == [False, True]
    a, b = store.images()
    assert (a.proposed_by, a.scored_by, a.uncertainty) == (None, None, None)
    assert b.proposed_by == "m1" and b.status is ImageStatus.PROPOSED


def test_failed_record_leaves_no_proposals(store: ProjectStore, monkeypatch) -> None:
    def fail(image_id: int, model_id: str) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "set_proposed_by", fail)
    with pytest.raises(RuntimeError):
        _propose(store, select_images(store, "m1").images)
    a = store.images()[0]
    assert store.instances(a.id) == [] and a.status is ImageStatus.NEW
    assert (a.scored_by, a.uncertainty) == (None, None)
