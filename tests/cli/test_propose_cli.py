"""maskloop models / propose end to end with a tiny random-weight model (CPU, seconds).

The tiny model's mask predictor is biased (``mask_fcn_logits.bias``) so that its random
detections have non-empty masks; every detection scoring 0.05 or more is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from app.cli import main
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Source
from app.ml.models import build_model
from app.ml.predictor import Predictor
from app.ml.propose import Shard

ARCH = "maskrcnn_mobilenet_v3_fpn"
FAST = ["--max-detections", "3", "--device", "cpu"]


def _install_card(folder: Path, card_id: str) -> None:
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=2, min_size=64, max_size=96, detections_per_img=50)
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(8.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / f"{card_id}.pt")
    sha = hashlib.sha256((folder / f"{card_id}.pt").read_bytes()).hexdigest()
    card = {
        "id": card_id,
        "title": "tiny test model",
        "architecture": ARCH,
        "categories": [{"id": 1, "name": "nucleus"}],
        "input": {"min_size": 64, "max_size": 96},
        "detections_per_img": 50,
        "weights": {"file": f"{card_id}.pt", "sha256": sha},
        "metrics": {"segm_AP": 0.25},
        "license": "MIT",
        "recipe": {},
    }
    (folder / f"{card_id}.json").write_text(json.dumps(card))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Five 64x80 images: cells_0 holds human work, the others are new; category 'object'."""
    _install_card(Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models", "tiny")
    root = tmp_path / "project"
    root.mkdir()
    rng = np.random.default_rng(0)
    with ProjectStore.create(root) as store:
        store.add_category("object")
        rows = []
        for k in range(5):
            (root / "imgs").mkdir(exist_ok=True)
            img = cv2.GaussianBlur(rng.integers(0, 255, (64, 80), dtype=np.uint8), (5, 5), 0)
            cv2.imwrite(str(root / "imgs" / f"cells_{k}.png"), img)
            rows.append(NewImage(f"imgs/cells_{k}.png", 80, 64))
        ids = store.add_images(rows)
        square = Polygon(np.array([[1, 1], [10, 1], [10, 10], [1, 10]]))
        store.add_instances(ids[0], [Instance(1, [square])])
    return root


def _state(root: Path) -> dict[str, tuple[ImageStatus, list[Source]]]:
    with ProjectStore.open(root) as store:
        return {
            im.path: (im.status, [i.source for i in store.instances(im.id)])
            for im in store.images()
        }


def test_propose_end_to_end_then_resume_and_force(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 0
    out = capsys.readouterr().out
    assert "4 images to propose with tiny (1 with annotations by a person skipped)" in out
    assert "on 4 images" in out
    state = _state(project)
    # The image with human work is untouched; the others hold model proposals.
    assert state["imgs/cells_0.png"] == (ImageStatus.NEW, [Source.HUMAN])
    for k in range(1, 5):
        status, sources = state[f"imgs/cells_{k}.png"]
        assert status is ImageStatus.PROPOSED and 0 < len(sources) <= 3
        assert set(sources) == {Source.MODEL}
    with ProjectStore.open(project) as store:
        image = store.image_by_path("imgs/cells_1.png")
        assert store.image(image.id).proposed_by == "tiny"
        inst = store.instances(image.id)[0]
        assert inst.score is not None and inst.model_version is None
        # The card's 'nucleus' maps onto the project's single category.
        assert [c.name for c in store.categories()] == ["object"]
        assert inst.category_id == 1
    # Running again skips what this model already proposed; --force redoes it.
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 0
    assert "0 images to propose" in capsys.readouterr().out
    assert (
        main(["propose", str(project), "--model", "tiny", "--images", "*_3.png", "--force", *FAST])
        == 0
    )
    assert "1 images to propose" in capsys.readouterr().out


def test_interrupted_run_resumes_where_it_stopped(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = Predictor.predict
    calls = []

    def interrupt_on_third(self, image, *, should_stop=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, image, should_stop=should_stop)

    monkeypatch.setattr(Predictor, "predict", interrupt_on_third)
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 130
    assert "run the same command again" in capsys.readouterr().out
    proposed = [p for p, (s, _) in _state(project).items() if s is ImageStatus.PROPOSED]
    assert len(proposed) == 2
    monkeypatch.setattr(Predictor, "predict", real)
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 0
    out = capsys.readouterr().out
    assert "2 images to propose with tiny (2 already proposed by tiny" in out


def test_shards_split_the_images_exactly_once() -> None:
    paths = [f"folder/img_{k:04d}.tif" for k in range(300)]
    shards = [Shard.parse(f"{i}/3") for i in (1, 2, 3)]
    owners = [[s.holds(p) for s in shards].count(True) for p in paths]
    assert owners == [1] * len(paths)
    sizes = [sum(s.holds(p) for p in paths) for s in shards]
    assert min(sizes) > 60


def test_propose_one_shard_and_pattern(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "propose",
                str(project),
                "--model",
                "tiny",
                "--shard",
                "1/3",
                "--images",
                "imgs/*",
                "--precision",
                "bf16",
                *FAST,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "bf16)" in out  # the model line names the precision it runs at
    shard = Shard(1, 3)
    mine = [f"imgs/cells_{k}.png" for k in range(1, 5) if shard.holds(f"imgs/cells_{k}.png")]
    state = _state(project)
    assert sorted(p for p, (s, _) in state.items() if s is ImageStatus.PROPOSED) == sorted(mine)
    assert "in other shards" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "No model card with id 'nope'"),
        (["--model", "v7"], "no model version v7"),
        (["--model", "tiny", "--shard", "3/2"], "I must be between 1 and N"),
        (["--model", "tiny", "--device", "cuda:0"], "CUDA is not available"),
    ],
)
def test_clear_errors(
    project: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available() and "cuda:0" in args:
        pytest.skip("CUDA is available here")
    assert main(["propose", str(project), *args]) == 1
    assert message in capsys.readouterr().err


def test_models_lists_zoo_user_and_project_cards(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _install_card(project / "models", "v1")
    with ProjectStore.open(project) as store:
        store.add_model_version("tiny", "models/v1.pt")
    assert main(["models", "--json", "--project", str(project)]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"maskrcnn-resnet50-fpn-coco", "maskrcnn-resnet50-fpn-v2-coco", "tiny", "v1"} <= set(
        rows
    )
    assert rows["tiny"]["weights_available"] is True
    assert rows["maskrcnn-resnet50-fpn-coco"]["weights_available"] is False
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "tiny  (tiny test model)" in text and "not downloaded" in text


def test_one_broken_card_is_a_warning_and_the_others_are_listed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models"
    card = json.loads((user / "tiny.json").read_text())
    escaping = {**card, "id": "escaping", "weights": {"file": "../../x.pt", "sha256": "0" * 64}}
    (user / "escaping.json").write_text(json.dumps(escaping))
    unknown = {**card, "id": "unknown-tv", "weights": {"torchvision": "NoSuch_Weights.V1"}}
    (user / "unknown-tv.json").write_text(json.dumps(unknown))
    _install_card(project / "models", "v1")
    with ProjectStore.open(project) as store:
        store.add_model_version("tiny", "models/v1.pt")
        store.add_model_version("tiny", "models/v2.pt")  # its card file is gone
    assert main(["models", "--project", str(project)]) == 0
    captured = capsys.readouterr()
    assert "tiny  (tiny test model)" in captured.out and "v1  (" in captured.out
    assert "escaping" not in captured.out and "unknown-tv" not in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 3
    assert "escaping.json" in captured.err and "outside the card's folder" in captured.err
    assert "unknown-tv.json" in captured.err and "v2" in captured.err
    assert main(["models", "--json"]) == 0
    assert "tiny" in {r["id"] for r in json.loads(capsys.readouterr().out)}


def test_an_image_the_model_fails_on_is_named_and_skipped(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = Predictor.predict

    def fail_on_two_channels(self, image, *, should_stop=None):
        if image.ndim == 3 and image.shape[2] == 2:
            raise ValueError("expected 1 or 3 channels, got 2")
        return real(self, image, should_stop=should_stop)

    monkeypatch.setattr(Predictor, "predict", fail_on_two_channels)
    tifffile.imwrite(project / "imgs" / "cells_2.tif", np.zeros((64, 80, 2), np.uint8))
    with ProjectStore.open(project) as store:
        store.add_images([NewImage("imgs/cells_2.tif", 80, 64)])
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 1
    out = capsys.readouterr().out
    assert "imgs/cells_2.tif: the model failed on it: ValueError: expected 1 or 3" in out
    assert "on 4 images" in out  # the images after it were proposed
    assert _state(project)["imgs/cells_2.tif"] == (ImageStatus.NEW, [])
    assert main(["info", str(project)]) == 0
    out = capsys.readouterr().out
    assert "could not be proposed: 1" in out and "imgs/cells_2.tif: the model failed" in out
    tifffile.imwrite(project / "imgs" / "cells_2.tif", np.zeros((64, 80), np.uint8))
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 0  # tried again
    assert "on 1 images" in capsys.readouterr().out
    assert main(["info", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed_images"] == []


def test_a_model_failing_on_every_image_stops_the_run(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import model_cmds

    def broken(self, image, *, should_stop=None):
        raise RuntimeError("shape mismatch in the mask head")

    monkeypatch.setattr(Predictor, "predict", broken)
    monkeypatch.setattr(model_cmds, "MAX_FAILURES_IN_A_ROW", 3)
    assert main(["propose", str(project), "--model", "tiny", *FAST]) == 1
    err = capsys.readouterr().err
    assert "failed on 3 images in a row" in err and "shape mismatch" in err


def test_version_files_without_their_row_are_not_a_version(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A training run killed after writing v1.pt/v1.json, before committing the row."""
    _install_card(project / "models", "v1")
    assert main(["models", "--json", "--project", str(project)]) == 0
    assert "v1" not in {r["id"] for r in json.loads(capsys.readouterr().out)}
    assert main(["propose", str(project), "--model", "v1", *FAST]) == 1
    assert "has no model version v1 (versions: none yet)" in capsys.readouterr().err
    assert _state(project)["imgs/cells_1.png"] == (ImageStatus.NEW, [])
    assert main(["evaluate", str(project), "--model", "v1"]) == 1
    assert "has no model version v1" in capsys.readouterr().err


def test_a_two_channel_tiff_is_proposed_on_the_cards_channel(project: Path, capsys) -> None:
    """Nuclei + cytoplasm stacks are inputs: proposed on input.channel (0), not an error."""
    rng = np.random.default_rng(3)
    planes = rng.integers(0, 4000, (64, 80, 2), dtype=np.uint16)
    tifffile.imwrite(project / "imgs" / "stack.tif", planes)
    assert main(["init", str(project), "--images", str(project / "imgs")]) == 0
    capsys.readouterr()
    assert main(["propose", str(project), "--model", "tiny", "--images", "*stack*", *FAST]) == 0
    with ProjectStore.open(project) as store:
        (rec,) = [r for r in store.images() if r.path.endswith("stack.tif")]
        assert rec.status is ImageStatus.PROPOSED and store.count_instances(rec.id) > 0


def test_simplify_is_saved_with_the_project_and_traces_its_proposals(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.simplify_tolerance import project_tolerance

    traced: list[float] = []
    trace = Predictor._instances

    def spy(self: Predictor, crops: list) -> list[Instance]:
        traced.append(self.polygon_tolerance)
        return trace(self, crops)

    monkeypatch.setattr(Predictor, "_instances", spy)
    assert main(["propose", str(project), "--simplify", "2.5", *FAST]) == 0
    assert "simplify tolerance of the project: 2.5 px" in capsys.readouterr().out
    assert traced and set(traced) == {2.5}
    with ProjectStore.open(project) as store:
        assert project_tolerance(store) == 2.5
    traced.clear()
    assert main(["propose", str(project), "--force", *FAST]) == 0  # the project's, unasked
    assert traced and set(traced) == {2.5}
    assert main(["propose", str(project), "--simplify", "20", *FAST]) == 1
    assert "between 0 (keep every pixel corner) and 10 px" in capsys.readouterr().err
