"""versions.py: a version is weights + card + row, all or nothing; the active model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from app.core.store import ProjectStore
from app.errors import MaskLoopError
from app.ml import versions, zoo
from app.ml.versions import (
    VersionError,
    active_model,
    register_version,
    set_active_model,
    version_card_path,
    version_id,
    version_model_id,
)


@pytest.fixture
def base_card() -> zoo.ModelCard:
    folder = Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models"
    folder.mkdir(parents=True)
    torch.save(nn.Linear(2, 2).state_dict(), folder / "base.pt")
    card = {
        "id": "base",
        "title": "base model",
        "architecture": "maskrcnn_mobilenet_v3_fpn",
        "categories": [{"id": 1, "name": "nucleus"}],
        "input": {"min_size": 64, "max_size": 96},
        "detections_per_img": 50,
        "weights": {
            "file": "base.pt",
            "sha256": hashlib.sha256((folder / "base.pt").read_bytes()).hexdigest(),
        },
        "metrics": {},
        "license": "MIT",
        "recipe": {},
    }
    (folder / "base.json").write_text(json.dumps(card))
    return zoo.get_card("base")


@pytest.fixture
def store(tmp_path: Path):
    with ProjectStore.create(tmp_path / "p") as s:
        s.add_category("nucleus")
        s.add_category("cell")
        yield s


def _register(store: ProjectStore, card: zoo.ModelCard, model: nn.Module, **kw):
    return register_version(
        store,
        model,
        card,
        parent_id=kw.get("parent_id"),
        categories=store.categories(),
        metrics={"segm_AP": 0.5},
        images_used=7,
        name=kw.get("name", ""),
        recipe={"epochs": 3},
    )


def test_register_writes_weights_card_and_row(
    store: ProjectStore, base_card: zoo.ModelCard
) -> None:
    model = nn.Linear(3, 4)
    v1 = _register(store, base_card, model, name="first")
    assert (v1.id, v1.card_id, v1.path, v1.images_used, v1.name) == (
        1,
        "base",
        "models/v1.pt",
        7,
        "first",
    )
    assert [c.name for c in v1.categories] == ["nucleus", "cell"]
    pt = store.root / "models" / "v1.pt"
    card = json.loads((store.root / "models" / "v1.json").read_text())
    assert card["id"] == "v1" and card["architecture"] == "maskrcnn_mobilenet_v3_fpn"
    assert card["weights"] == {
        "file": "v1.pt",
        "sha256": hashlib.sha256(pt.read_bytes()).hexdigest(),
    }
    assert card["categories"] == [{"id": 1, "name": "nucleus"}, {"id": 2, "name": "cell"}]
    assert card["input"]["min_size"] == 64 and card["metrics"] == {"segm_AP": 0.5}
    assert card["recipe"] == {
        "base_model": "base",
        "parent_version": None,
        "images_used": 7,
        "epochs": 3,
    }
    state = torch.load(pt, weights_only=True)
    assert torch.equal(state["weight"], model.weight.detach())
    assert zoo.get_card("v1", store.root).id == "v1"
    v2 = _register(store, zoo.get_card("v1", store.root), model, parent_id=1)
    assert (v2.id, v2.parent_id, v2.card_id) == (2, 1, "v1")
    assert not [p for p in (store.root / "models").iterdir() if p.name.startswith(".")]


def test_failed_row_leaves_no_files(
    store: ProjectStore, base_card: zoo.ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store, "add_model_version", fail)
        with pytest.raises(OSError):
            _register(store, base_card, nn.Linear(2, 2))
    assert store.model_versions() == []
    assert list((store.root / "models").iterdir()) == []
    assert _register(store, base_card, nn.Linear(2, 2)).id == 1


def test_interrupted_write_registers_nothing(
    store: ProjectStore, base_card: zoo.ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = versions.write_bytes_atomic
    calls = []

    def killed_on_card(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if path.suffix == ".json":
            raise KeyboardInterrupt
        real(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(versions, "write_bytes_atomic", killed_on_card)
        with pytest.raises(KeyboardInterrupt):
            _register(store, base_card, nn.Linear(2, 2))
    assert calls == ["v1.pt", "v1.json"]
    assert store.model_versions() == []
    assert list((store.root / "models").iterdir()) == []


def test_active_model(store: ProjectStore, base_card: zoo.ModelCard) -> None:
    assert active_model(store) == "cells-mobile"
    with pytest.raises(VersionError, match="no model version v3"):
        set_active_model(store, "v3")
    _register(store, base_card, nn.Linear(2, 2))
    set_active_model(store, "v1")
    assert active_model(store) == "v1"
    set_active_model(store, "base")
    assert active_model(store) == "base"
    with pytest.raises(MaskLoopError, match="no-such-card"):
        set_active_model(store, "no-such-card")
    assert active_model(store) == "base"
    assert (version_id("v12"), version_id("cells-mobile"), version_id("v")) == (12, None, None)


def test_registration_removes_temp_files_a_killed_registration_left(
    store: ProjectStore, base_card: zoo.ModelCard
) -> None:
    models = store.root / "models"
    models.mkdir()
    dead_pid = 2**22 + 12345  # above any Linux pid_max: that writer is gone
    left = [models / f".v1.pt.{dead_pid}-0123456789ab.tmp", models / f".v1.json.{dead_pid}.tmp"]
    for path in left:
        path.write_bytes(b"half")
    _register(store, base_card, nn.Linear(2, 2))
    assert sorted(p.name for p in models.iterdir()) == ["v1.json", "v1.pt"]


def test_one_spelling_of_a_version_id(store: ProjectStore, base_card: zoo.ModelCard) -> None:
    assert version_id(version_model_id(7)) == 7
    for not_a_version in ("v1\n", "V1", "v1x", "xv1", "v-1", " v1"):
        assert version_id(not_a_version) is None
    version = _register(store, base_card, nn.Linear(2, 2))
    model_id = version_model_id(version.id)
    assert version_card_path(store.root, model_id) == store.root / "models" / "v1.json"
    assert zoo.get_card(model_id, store.root).path == version_card_path(store.root, model_id)
    with pytest.raises(zoo.ModelNotFoundError, match="No model card with id"):
        zoo.get_card("v1\n", store.root)  # not a version id: no card file v1\n.json is read
