"""maskloop train / evaluate end to end on a tiny project with a tiny model (CPU, seconds)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.cli import main
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon
from app.ml import zoo
from app.ml.predictor import Predictor
from app.ml.versions import active_model

H, W = 64, 80
ARCH = "maskrcnn_mobilenet_v3_fpn"


def ellipse(cx: int, cy: int, a: int, b: int) -> np.ndarray:
    return cv2.ellipse2Poly((cx, cy), (a, b), 0, 0, 360, 20).astype(np.float32)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads that
    wait for each other make these tests ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_project(root: Path, n: int = 4, *, done: bool = True, category_id: int = 1) -> Path:
    """Bright ellipses on a dark background, annotated, marked done."""
    rng = np.random.default_rng(1)
    with ProjectStore.create(root) as store:
        cat = store.add_category("nucleus", id=category_id)
        assert cat.id == category_id
        rows = []
        shapes: list[list[np.ndarray]] = []
        for k in range(n):
            image = rng.normal(20, 4, (H, W)).clip(0, 255).astype(np.uint8)
            polys = []
            for _ in range(3):
                cx, cy = int(rng.integers(12, W - 12)), int(rng.integers(12, H - 12))
                poly = ellipse(cx, cy, int(rng.integers(5, 10)), int(rng.integers(4, 8)))
                cv2.fillPoly(image, [poly.astype(np.int32)], 200)
                polys.append(poly)
            cv2.imwrite(str(root / f"cells_{k}.png"), image)
            rows.append(NewImage(f"cells_{k}.png", W, H))
            shapes.append(polys)
        for image_id, polys in zip(store.add_images(rows), shapes, strict=True):
            store.add_instances(image_id, [Instance(cat.id, [Polygon(p)]) for p in polys])
            if done:
                store.set_image_status(image_id, ImageStatus.DONE)
    return root


TRAIN = ["--epochs", "1", "--batch-size", "2", "--max-iters", "2", "--device", "cpu"]


def test_train_registers_a_version_the_predictor_loads(
    tmp_path: Path, tiny_card: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path / "p")
    assert main(["train", str(project), "--base-model", tiny_card, *TRAIN, "--name", "first"]) == 0
    out = capsys.readouterr().out
    assert "Registered model version v1" in out and "segm" in out
    with ProjectStore.open(project) as store:
        (version,) = store.model_versions()
        assert (version.id, version.card_id, version.name) == (1, "tiny", "first")
        assert version.path == "models/v1.pt" and version.images_used >= 1
        assert "segm_AP" in version.metrics and version.metrics["max_dets"] == 1000
        assert active_model(store) == "v1"
    assert not list((project / "models" / "checkpoints").glob("*.pt"))
    card = zoo.get_card("v1", project)
    assert card.id == "v1" and [c.name for c in card.categories] == ["nucleus"]
    predictor = Predictor(card, device="cpu", score_threshold=0.0)
    image = cv2.imread(str(project / "cells_0.png"), cv2.IMREAD_UNCHANGED)
    instances = predictor.predict(image)
    assert all(i.category_id == 1 and i.polygons for i in instances)
    # A second run fine-tunes the active version: its parent is v1.
    assert main(["train", str(project), *TRAIN, "--no-activate"]) == 0
    with ProjectStore.open(project) as store:
        assert store.model_version(2).parent_id == 1
        assert active_model(store) == "v1"


def test_a_category_with_another_id_keeps_the_models_heads(
    tmp_path: Path, tiny_card: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The tiny model's "nucleus" is id 1; this project's is id 3. Proposing, training and
    evaluation all match it by name: training keeps the trained heads, evaluation runs."""
    project = make_project(tmp_path / "p", category_id=3)
    replaced = []
    monkeypatch.setattr("app.cli.train_cmds.replace_heads", lambda *a: replaced.append(a))
    assert main(["train", str(project), "--base-model", tiny_card, *TRAIN]) == 0
    assert replaced == []
    card = zoo.get_card("v1", project)
    assert [(c.id, c.name) for c in card.categories] == [(3, "nucleus")]
    capsys.readouterr()
    assert main(["evaluate", str(project), "--model", tiny_card, "--split", "all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["instances"] == 12


def test_evaluate_reports_coco_numbers(
    tmp_path: Path, tiny_card: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path / "p", n=3)
    assert main(["evaluate", str(project), "--model", tiny_card, "--split", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny" and result["max_dets"] == 1000
    assert result["images"] == 3 and result["instances"] == 9
    assert set(result["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert sum(result["reviewer"][k] for k in ("accepted", "edited", "missed")) >= 9
    # The same images as a COCO file from another tool.
    coco = {
        "images": [
            {"id": k, "file_name": f"cells_{k}.png", "width": W, "height": H} for k in range(3)
        ],
        "categories": [{"id": 5, "name": "nucleus"}],
        "annotations": [],
    }
    with ProjectStore.open(project) as store:
        for rec in store.images():
            k = int(rec.path.split("_")[1].split(".")[0])
            for inst in store.instances(rec.id):
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": k,
                        "category_id": 5,
                        "iscrowd": 0,
                        "segmentation": [inst.polygons[0].exterior.flatten().tolist()],
                    }
                )
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    args = ["evaluate", str(project), "--model", tiny_card, "--coco", str(tmp_path / "gt.json")]
    assert main([*args, "--images-root", str(project), "--max-dets", "100"]) == 0
    out = capsys.readouterr().out
    assert "on 3 images, 9 instances" in out and "up to 100 detections" in out


def test_evaluate_on_label_maps_without_a_project(
    tmp_path: Path, install_tiny_card, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = install_tiny_card(mask_bias=6.0)
    for folder in ("images/bright", "images/gray", "labels/bright", "labels/gray"):
        (tmp_path / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for kind in ("bright", "gray"):
        for k in range(2):
            image = rng.integers(0, 255, (H, W), dtype=np.uint8)
            labels = np.zeros((H, W), np.uint16)
            cv2.fillPoly(labels, [ellipse(20, 20, 8, 6).astype(np.int32)], 1)
            cv2.fillPoly(labels, [ellipse(55, 40, 9, 7).astype(np.int32)], 2)
            cv2.imwrite(str(tmp_path / "images" / kind / f"n{k}.png"), image)
            cv2.imwrite(str(tmp_path / "labels" / kind / f"n{k}_masks.png"), labels)
    args = ["evaluate", "--model", tiny, "--images", str(tmp_path / "images")]
    assert main([*args, "--labels", str(tmp_path / "labels"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 4 and result["instances"] == 8
    assert set(result["per_kind"]) == {"bright", "gray"}  # from the subfolders
    assert result["per_kind"]["gray"]["instances"] == 4
    assert "area_ratio" in result
    assert main([*args, "--labels", str(tmp_path / "labels")]) == 0
    out = capsys.readouterr().out
    assert "tiny on 4 images, 8 instances" in out and "bright: 2 images" in out
    # --images needs --labels: a one-line error, exit code 1.
    assert main(args) == 1
    assert "--images and --labels go together" in capsys.readouterr().err


def test_failed_run_registers_nothing(
    tmp_path: Path,
    tiny_card: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = make_project(tmp_path / "p")
    # Broken input makes the loss NaN: the trainer stops with a clear error.
    monkeypatch.setattr(
        "app.ml.dataset.to_model_input",
        lambda image, spec: torch.full((3, *image.shape[:2]), float("nan")),
    )
    assert main(["train", str(project), "--base-model", tiny_card, *TRAIN]) == 1
    assert "loss became" in capsys.readouterr().err
    with ProjectStore.open(project) as store:
        assert store.model_versions() == []
        assert active_model(store) == "cells-mobile"
    assert not list((project / "models").glob("v*"))


def test_full_disk_is_one_line_and_leaves_no_temp_file(
    tmp_path: Path,
    tiny_card: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = make_project(tmp_path / "p")

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(["train", str(project), "--base-model", tiny_card, *TRAIN]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Free some disk space" in err
    assert "Traceback" not in err
    checkpoints = project / "models" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["run.json"]


def test_stopped_run_keeps_a_checkpoint_and_resumes(
    tmp_path: Path,
    tiny_card: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = make_project(tmp_path / "p", n=4)
    polls = []

    @contextlib.contextmanager
    def stop_after_first_iteration():
        yield lambda: polls.append(1) or len(polls) > 1  # as if Ctrl-C came during step 1

    quick = ["--epochs", "2", "--max-iters", "3", "--device", "cpu"]
    args = ["train", str(project), "--base-model", tiny_card, *quick]
    with monkeypatch.context() as patch:
        patch.setattr("app.cli.train_cmds._stop_on_ctrl_c", stop_after_first_iteration)
        assert main(args) == 130
    assert "--resume" in capsys.readouterr().out
    checkpoints = project / "models" / "checkpoints"
    assert (checkpoints / "last.pt").exists()
    with ProjectStore.open(project) as store:
        assert store.model_versions() == []
    # Starting over by accident is refused; resuming finishes and registers.
    assert main(args) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(project), *quick, "--resume"]) == 0
    with ProjectStore.open(project) as store:
        (version,) = store.model_versions()
        assert version.card_id == "tiny"  # the base model was taken from the interrupted run
    assert not (checkpoints / "last.pt").exists()


def test_clear_errors(tmp_path: Path, tiny_card: str, capsys: pytest.CaptureFixture[str]) -> None:
    undone = make_project(tmp_path / "undone", n=2, done=False)
    assert main(["train", str(undone), "--base-model", tiny_card, *TRAIN]) == 1
    assert "marked done" in capsys.readouterr().err
    assert main(["evaluate", str(undone), "--model", tiny_card]) == 1
    assert "No done images" in capsys.readouterr().err
    project = make_project(tmp_path / "p", n=2)
    assert main(["train", str(project), "--base-model", "no-such-model", *TRAIN]) == 1
    assert "no-such-model" in capsys.readouterr().err
    assert main(["train", str(project), "--resume"]) == 1
    assert "Nothing to resume" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere")]) == 1
    assert "not a MaskLoop project" in capsys.readouterr().err
