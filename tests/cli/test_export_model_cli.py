"""``maskloop export-model``: a project version or a card id to ONNX, and the refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.store import MODELS_DIR, ProjectStore
from app.ml import versions, zoo

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture
def project(tmp_path: Path, tiny_card: str) -> Path:
    """A project with categories cell and nucleus and version v1, trained from "tiny"."""
    root = tmp_path / "p"
    base = zoo.get_card(tiny_card)
    with ProjectStore.create(root) as store:
        store.add_category("cell")
        versions.register_version(
            store,
            zoo.load_model(base),
            base,
            parent_id=None,
            categories=store.categories()[:1],
            metrics={},
            images_used=0,
        )
    return root


def test_exports_a_project_version(project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "deploy" / "model.onnx"
    assert main(["export-model", str(project), "v1", "--onnx", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["id"] == "v1" and card["onnx"]["file"] == "model.onnx"
    assert card["categories"] == [{"label": 1, "id": 1, "name": "cell"}]
    assert card["input"]["max_size"] == 96
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, scores, labels, masks = sess.run(
        None, {"image": np.random.default_rng(0).random((3, 70, 90), dtype=np.float32)}
    )
    assert boxes.shape == (len(scores), 4) and masks.shape[1:] == (1, 28, 28)


def test_an_unknown_version_is_named(project: Path, tmp_path: Path, capsys) -> None:
    assert main(["export-model", str(project), "v9", "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "no model version v9 (versions: v1)" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_existing_files_need_overwrite(
    project: Path, tiny_card: str, tmp_path: Path, capsys
) -> None:
    """The card beside counts too; the overwriting export names a card id, not a version."""
    out = tmp_path / "m.onnx"
    out.with_suffix(".json").write_text("{}")
    assert main(["export-model", str(project), "v1", "--onnx", str(out)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export-model", str(project), tiny_card, "--onnx", str(out), "--overwrite"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["id"] == tiny_card


def test_never_writes_into_the_versions_folder(project: Path, capsys) -> None:
    out = project / MODELS_DIR / "v1.onnx"  # its card would replace the version's card
    card_before = (project / MODELS_DIR / "v1.json").read_text()
    assert main(["export-model", str(project), "v1", "--onnx", str(out), "--overwrite"]) == 1
    assert "model versions folder" in capsys.readouterr().err
    assert (project / MODELS_DIR / "v1.json").read_text() == card_before


def test_a_missing_extra_is_named(project: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert main(["export-model", str(project), "v1", "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "pip install 'maskloop[export]'" in capsys.readouterr().err


def test_the_name_must_end_in_onnx(project: Path, tmp_path: Path, capsys) -> None:
    assert main(["export-model", str(project), "v1", "--onnx", str(tmp_path / "m.json")]) == 1
    assert "ending in .onnx" in capsys.readouterr().err
