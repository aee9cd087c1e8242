"""Model cards and weights: listing, lookup, loading, and every way loading can fail."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from app.ml import zoo
from app.ml.models import build_model

TINY = dict(min_size=64, max_size=96)


def _user_dir() -> Path:
    folder = Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _card_dict(card_id: str, weights_file: str, sha: str, n_categories: int = 1) -> dict:
    return {
        "id": card_id,
        "title": f"{card_id} test model",
        "architecture": "maskrcnn_mobilenet_v3_fpn",
        "categories": [{"id": 10 + k, "name": f"c{k}"} for k in range(n_categories)],
        "input": {"min_size": 64, "max_size": 96},
        "detections_per_img": 20,
        "weights": {"file": weights_file, "sha256": sha},
        "metrics": {"segm_AP": 0.5},
        "license": "MIT",
        "recipe": {"epochs": 1},
    }


def _install(folder: Path, card_id: str, state: object, **kw: object) -> Path:
    torch.save(state, folder / f"{card_id}.pt")
    sha = hashlib.sha256((folder / f"{card_id}.pt").read_bytes()).hexdigest()
    path = folder / f"{card_id}.json"
    path.write_text(json.dumps(_card_dict(card_id, f"{card_id}.pt", sha, **kw)))
    return path


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, **TINY).state_dict()


def test_bundled_coco_cards_resolve_to_torchvision_weights() -> None:
    cards = {c.id: c for c in zoo.list_cards()}
    for card_id, arch in [
        ("maskrcnn-resnet50-fpn-coco", "maskrcnn_resnet50_fpn"),
        ("maskrcnn-resnet50-fpn-v2-coco", "maskrcnn_resnet50_fpn_v2"),
    ]:
        card = cards[card_id]
        assert card.architecture == arch
        assert card.num_classes == 91
        assert card.category_for_label(1).name == "person"
        weights = zoo.torchvision_weights(card.weights.torchvision)
        assert len(weights.meta["categories"]) == card.num_classes
        assert card.metrics["mask_map"] > 30


def test_card_json_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    data = _card_dict("rt", "rt.pt", "ab" * 32, n_categories=2)
    data["future_field"] = {"x": 1}
    card = zoo.ModelCard.from_json(json.dumps(data))
    card.save(tmp_path / "rt.json")
    again = zoo.ModelCard.load(tmp_path / "rt.json")
    assert again.to_dict() == card.to_dict()
    assert again.to_dict()["future_field"] == {"x": 1}
    assert again.input.min_size == 64 and again.num_classes == 3
    assert [c.id for c in again.categories] == [10, 11]
    assert again.weights_path() == (tmp_path / "rt.pt").resolve()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("architecture"), "incomplete"),
        (lambda d: d.update(architecture="yolo"), "unknown architecture"),
        (lambda d: d.update(categories=[]), "empty"),
        (lambda d: d["weights"].update(torchvision="X.Y"), "either"),
        (lambda d: d.update(input={"normalize": "magic"}), "input"),
        (lambda d: d.update(id="../evil"), "id"),
        (lambda d: d.update(rpn_proposals=0), "rpn_proposals"),
        (lambda d: d.update(rpn_proposals="many"), "malformed"),
        (lambda d: d.update(nms_iou=1.5), "nms_iou"),
        (lambda d: d.update(nms_iou=0), "nms_iou"),
        (lambda d: d.update(input={"min_size": 1e5, "max_size": 1e5}), "max_size <= 4096"),
        (lambda d: d.update(input={"min_size": 8, "max_size": 96}), "32 <= min_size"),
        (lambda d: d.update(input={"min_size": 64.5, "max_size": 96}), "whole numbers"),
        (lambda d: d.update(detections_per_img=10**6), "detections_per_img=1000000; use 1 to"),
        (lambda d: d.update(detections_per_img=0), "detections_per_img"),
        (lambda d: d.update(rpn_proposals=10**7), "rpn_proposals=10000000; use 1 to"),
    ],
)
def test_invalid_cards_raise_card_error(change, message: str) -> None:
    data = _card_dict("bad", "bad.pt", "00" * 32)
    change(data)
    with pytest.raises(zoo.CardError, match=message):
        zoo.ModelCard.from_dict(data)


def test_broken_user_card_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    (_user_dir() / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="app.ml.zoo"):
        ids = [c.id for c in zoo.list_cards()]
    assert "broken" not in ids and "maskrcnn-resnet50-fpn-coco" in ids
    assert "broken.json" in caplog.text


def test_user_card_with_weights_outside_its_folder_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture, tiny_state
) -> None:
    _install(_user_dir(), "good", tiny_state)
    (_user_dir() / "esc.json").write_text(json.dumps(_card_dict("esc", "../out.pt", "00" * 32)))
    with caplog.at_level(logging.WARNING, logger="app.ml.zoo"):
        ids = [c.id for c in zoo.list_cards()]
    assert "esc" not in ids and "good" in ids and "maskrcnn-resnet50-fpn-coco" in ids
    assert "esc.json" in caplog.text and "outside" in caplog.text


def test_weights_outside_the_card_folder_are_refused(tmp_path: Path) -> None:
    data = _card_dict("esc", "../outside.pt", "00" * 32)
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "esc.json").write_text(json.dumps(data))
    card = zoo.ModelCard.load(tmp_path / "cards" / "esc.json")
    with pytest.raises(zoo.CardError, match="outside"):
        zoo.load_model(card)


def test_get_card_finds_user_and_project_cards(tmp_path: Path, tiny_state) -> None:
    _install(_user_dir(), "mine", tiny_state)
    assert zoo.get_card("mine").title == "mine test model"
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    _install(project / "models", "v2", tiny_state)
    assert zoo.get_card("v2", project).id == "v2"
    with pytest.raises(zoo.ModelNotFoundError, match="no model version v3"):
        zoo.get_card("v3", project)
    with pytest.raises(zoo.ModelNotFoundError, match="project folder"):
        zoo.get_card("v2")
    with pytest.raises(zoo.ModelNotFoundError, match="available: .*mine"):
        zoo.get_card("nope")


def test_load_model_from_a_weights_file(tiny_state) -> None:
    card = zoo.ModelCard.load(_install(_user_dir(), "ok", tiny_state))
    model = zoo.load_model(card)
    assert not model.training
    assert model.roi_heads.detections_per_img == 20
    assert model.transform.min_size == (64,)
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_state[key]), key
    # Without rpn_proposals the card keeps torchvision's inference proposal counts.
    assert model.rpn._post_nms_top_n["testing"] == 1000


def test_card_detector_settings_reach_the_model_and_round_trip(tiny_state) -> None:
    path = _install(_user_dir(), "dense", tiny_state)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "rpn_proposals": 2500, "nms_iou": 0.4}))
    card = zoo.ModelCard.load(path)
    assert (card.rpn_proposals, card.nms_iou) == (2500, 0.4)
    again = zoo.ModelCard.from_dict(card.to_dict())
    assert (again.rpn_proposals, again.nms_iou) == (2500, 0.4)
    model = zoo.load_model(card)
    assert model.roi_heads.nms_thresh == 0.4
    assert model.rpn._pre_nms_top_n["testing"] == 2500
    assert model.rpn._post_nms_top_n["testing"] == 2500


def test_hash_mismatch(tiny_state) -> None:
    path = _install(_user_dir(), "tampered", tiny_state)
    weights = path.with_suffix(".pt")
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(zoo.WeightsHashError, match="damaged or was replaced"):
        zoo.load_model(zoo.ModelCard.load(path))


def test_missing_weights_file_says_where_it_belongs(tiny_state) -> None:
    path = _install(_user_dir(), "gone", tiny_state)
    path.with_suffix(".pt").unlink()
    with pytest.raises(zoo.ModelLoadError, match="expected .*gone.pt"):
        zoo.load_model(zoo.ModelCard.load(path))


class _NotWeights:
    pass


@pytest.mark.parametrize(
    "content",
    [b"this is not a zip or pickle", [torch.zeros(2)], {"obj": _NotWeights()}],
    ids=["garbage", "list", "object"],
)
def test_corrupt_or_unsafe_files(content: object) -> None:
    folder = _user_dir()
    if isinstance(content, bytes):
        (folder / "bad.pt").write_bytes(content)
        sha = hashlib.sha256(content).hexdigest()
        (folder / "bad.json").write_text(json.dumps(_card_dict("bad", "bad.pt", sha)))
        path = folder / "bad.json"
    else:
        path = _install(folder, "bad", content)
    with pytest.raises(zoo.CorruptWeightsError):
        zoo.load_model(zoo.ModelCard.load(path))


def test_category_count_mismatch(tiny_state) -> None:
    path = _install(_user_dir(), "three", tiny_state, n_categories=3)
    with pytest.raises(zoo.WeightsMismatchError, match="predict 1 categories but its card lists 3"):
        zoo.load_model(zoo.ModelCard.load(path))


def test_architecture_mismatch() -> None:
    path = _install(_user_dir(), "linear", nn.Linear(3, 2).state_dict())
    with pytest.raises(zoo.WeightsMismatchError, match="do not fit the architecture"):
        zoo.load_model(zoo.ModelCard.load(path))


def test_torchvision_weights_for_another_architecture() -> None:
    data = _card_dict("tvx", "x.pt", "")
    data["weights"] = {"torchvision": "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"}
    with pytest.raises(zoo.WeightsMismatchError, match="maskrcnn_resnet50_fpn, not"):
        zoo.load_model(zoo.ModelCard.from_dict(data))


NAME = "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"


def _served_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, good_hash: bool) -> Path:
    """A small state dict served from a file:// URL named like torchvision's files."""
    src = tmp_path / "served.pth"
    torch.save({"w": torch.arange(6.0)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    served = tmp_path / f"tiny-{digest if good_hash else '00000000'}.pth"
    src.rename(served)
    monkeypatch.setattr(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.value, "url", served.as_uri())
    return served


def test_no_network_refuses_downloads_and_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _served_weights(tmp_path, monkeypatch, good_hash=True)
    with pytest.raises(zoo.WeightsDownloadError, match="MASKLOOP_NO_NETWORK") as info:
        zoo.torchvision_state_dict(NAME)
    assert str(zoo.hub_cache_path(served.as_uri())) in str(info.value)
    assert not zoo.hub_cache_path(served.as_uri()).exists()


def test_download_goes_to_the_hub_cache_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MASKLOOP_NO_NETWORK")
    served = _served_weights(tmp_path, monkeypatch, good_hash=True)
    state = zoo.torchvision_state_dict(NAME)
    assert torch.equal(state["w"], torch.arange(6.0))
    cached = zoo.hub_cache_path(served.as_uri())
    assert cached.is_file() and cached.is_relative_to(Path(os.environ["TORCH_HOME"]))
    served.unlink()  # the second load must not download
    assert torch.equal(zoo.torchvision_state_dict(NAME)["w"], torch.arange(6.0))
    cached.write_bytes(cached.read_bytes()[:-4] + b"oops")
    with pytest.raises(zoo.WeightsHashError, match="Delete the file"):
        zoo.torchvision_state_dict(NAME)


def test_download_with_a_bad_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASKLOOP_NO_NETWORK")
    served = _served_weights(tmp_path, monkeypatch, good_hash=False)
    with pytest.raises(zoo.WeightsHashError, match="hash mismatch"):
        zoo.torchvision_state_dict(NAME)
    assert not zoo.hub_cache_path(served.as_uri()).exists()


def test_failed_download_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MASKLOOP_NO_NETWORK")
    served = _served_weights(tmp_path, monkeypatch, good_hash=True)
    served.unlink()
    with pytest.raises(zoo.WeightsDownloadError, match="by hand and put it at"):
        zoo.torchvision_state_dict(NAME)
