"""Uncertainty stored while proposing, and ``maskloop propose --score-only``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from app.core.score_threshold import SCORE_FLOOR, project_threshold
from app.core.store import NewImage, ProjectStore
from app.core.types import Category, ImageStatus, Instance, Polygon, Source
from app.ml.active import DEFAULT_FLOOR, image_uncertainty
from app.ml.predictor import Predictor
from app.ml.propose import (
    detection_threshold,
    propose_images,
    select_images,
)
from app.ml.zoo import ModelCard, WeightsSource

ARCH = "maskrcnn_mobilenet_v3_fpn"
SCORES = [0.9, 0.6, 0.45, 0.3, 0.1, 0.04]


def _square(x: float) -> Polygon:
    return Polygon(np.array([[x, 2], [x + 8, 2], [x + 8, 10], [x, 10]]))


class ScriptedPredictor:
    """Returns one detection per score in SCORES, whatever the image."""

    def predict(self, image: object, *, should_stop: object = None) -> list[Instance]:
        return [
            Instance(1, [_square(4 + 10 * k)], score=s, source=Source.MODEL)
            for k, s in enumerate(SCORES)
        ]


CARD = ModelCard(
    id="scripted",
    title="scripted",
    architecture=ARCH,
    categories=[Category(1, "nucleus")],
    weights=WeightsSource(file="none.pt"),
)


def _make_project(root: Path) -> None:
    """Four 64x80 images: cells_0 holds human work, the others are new; category 'object'."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    with ProjectStore.create(root) as store:
        store.add_category("object")
        rows = []
        for k in range(4):
            img = cv2.GaussianBlur(rng.integers(0, 255, (64, 80), dtype=np.uint8), (5, 5), 0)
            cv2.imwrite(str(root / "imgs" / f"cells_{k}.png"), img)
            rows.append(NewImage(f"imgs/cells_{k}.png", 80, 64))
        ids = store.add_images(rows)
        store.add_instances(ids[0], [Instance(1, [_square(1)])])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    _make_project(root)
    return root


def test_detection_threshold_reaches_down_to_the_floor() -> None:
    assert detection_threshold(0.5) == DEFAULT_FLOOR
    assert detection_threshold(0.01) == 0.01


def test_proposing_stores_uncertainty_of_all_detections_and_proposals_above_threshold(
    project: Path,
) -> None:
    with ProjectStore.open(project) as store:
        chosen = select_images(store, "scripted")
        assert chosen.human_work == 1 and len(chosen.images) == 3
        outcomes = list(
            propose_images(
                store,
                ScriptedPredictor(),
                CARD,
                chosen.images,
                model_id="scripted",
                model_version=None,
                threshold=0.5,
            )
        )
        expected = image_uncertainty(SCORES)
        # The sub-threshold detections count: the two shown proposals alone would give 0.5.
        assert expected == pytest.approx(0.1 + 0.4 + 0.45 + 0.3 + 0.1)
        for outcome in outcomes:
            assert outcome.stored and outcome.instances == 2
            assert outcome.uncertainty == pytest.approx(expected)
            image = store.image(outcome.image.id)
            assert image.status is ImageStatus.PROPOSED
            assert image.uncertainty == pytest.approx(expected)
            assert sorted(i.score for i in store.instances(image.id)) == [0.6, 0.9]
            record = store.image(image.id)
            assert record.proposed_by == record.scored_by == "scripted"
        human = store.image_by_path("imgs/cells_0.png")
        assert human.uncertainty is None and human.status is ImageStatus.NEW


def test_score_only_writes_no_proposals_and_is_skipped_next_time(project: Path) -> None:
    with ProjectStore.open(project) as store:
        images = select_images(store, "scripted", score_only=True).images
        outcomes = list(
            propose_images(
                store,
                ScriptedPredictor(),
                CARD,
                images,
                model_id="scripted",
                model_version=None,
                threshold=0.5,
                score_only=True,
            )
        )
        assert [o.instances for o in outcomes] == [0, 0, 0]
        for image in images:
            record = store.image(image.id)
            assert record.status is ImageStatus.NEW
            assert record.uncertainty == pytest.approx(image_uncertainty(SCORES))
            assert store.instances(image.id) == []
            assert store.image(image.id).proposed_by is None
        again = select_images(store, "scripted", score_only=True)
        assert again.images == [] and again.already_proposed == 3
        # Proposing is a different job: the scored images are still to be proposed.
        assert len(select_images(store, "scripted").images) == 3
        assert len(select_images(store, "scripted", score_only=True, force=True).images) == 3


def test_cli_score_only_fills_uncertainty(
    project: Path, capsys: pytest.CaptureFixture[str], install_tiny_card
) -> None:
    install_tiny_card(mask_bias=8.0)
    args = ["propose", str(project), "--model", "tiny", "--device", "cpu", "--score-only"]
    assert main([*args, "--max-detections", "20"]) == 0
    out = capsys.readouterr().out
    assert "3 images to score with tiny (1 with annotations by a person skipped)" in out
    assert "stored the uncertainty of 3 images" in out
    with ProjectStore.open(project) as store:
        for image in store.images():
            assert image.status is ImageStatus.NEW
            if image.path == "imgs/cells_0.png":
                assert image.uncertainty is None
                assert [i.source for i in store.instances(image.id)] == [Source.HUMAN]
            else:
                assert image.uncertainty is not None and image.uncertainty >= 0.0
                assert store.instances(image.id) == []
    assert main(args) == 0
    assert "0 images to score with tiny (3 already scored by tiny" in capsys.readouterr().out


def test_cli_stores_every_detection_down_to_the_floor_and_saves_the_threshold(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    install_tiny_card,
) -> None:
    install_tiny_card(mask_bias=8.0)
    thresholds = []

    def scripted(self: Predictor, image: object, *, should_stop: object = None) -> list:
        thresholds.append(self.model.roi_heads.score_thresh)
        return ScriptedPredictor().predict(image)

    monkeypatch.setattr(Predictor, "predict", scripted)
    args = ["propose", str(project), "--model", "tiny", "--device", "cpu", "--threshold", "0.4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "score threshold of the project: 0.40 (0 images rescored)" in out
    assert "proposed 15 instances on 3 images" in out  # all but the 0.04 one
    assert thresholds == [SCORE_FLOOR] * 3
    with ProjectStore.open(project) as store:
        assert project_threshold(store) == 0.4
        image = store.image_by_path("imgs/cells_1.png")
        assert image.uncertainty == pytest.approx(image_uncertainty(SCORES, threshold=0.4))
        assert sorted(i.score for i in store.instances(image.id)) == [0.1, 0.3, 0.45, 0.6, 0.9]


def test_what_is_stored_does_not_depend_on_the_threshold_used_to_propose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, install_tiny_card
) -> None:
    install_tiny_card(mask_bias=8.0)
    monkeypatch.setattr(
        Predictor,
        "predict",
        lambda self, image, *, should_stop=None: ScriptedPredictor().predict(image),
    )
    stored = {}
    for threshold in ("0.8", "0.3"):
        root = tmp_path / threshold
        _make_project(root)
        args = ["propose", str(root), "--model", "tiny", "--device", "cpu"]
        assert main([*args, "--threshold", threshold]) == 0
        with ProjectStore.open(root) as store:
            image = store.image_by_path("imgs/cells_1.png")
            stored[threshold] = sorted(i.score for i in store.instances(image.id))
    assert stored["0.8"] == stored["0.3"] == [0.1, 0.3, 0.45, 0.6, 0.9]
