"""Shared test set-up: Qt runs headless, nothing touches the network or the user's settings."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MASKLOOP_NO_NETWORK", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep QSettings, caches and logs of every test out of the real home directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("TORCH_HOME", str(home / ".cache" / "torch"))
    yield


@pytest.fixture
def install_tiny_card():
    """Install a random-weight light model at 64 px as the user card "tiny" (nothing
    downloads); ``mask_bias`` pushes its mask logits up so detections get solid masks."""

    def install(mask_bias: float | None = None) -> str:
        import hashlib
        import json
        from pathlib import Path

        import torch

        from app.ml.models import build_model

        arch = "maskrcnn_mobilenet_v3_fpn"
        torch.manual_seed(0)
        model = build_model(arch, num_classes=2, min_size=64, max_size=96, detections_per_img=50)
        if mask_bias is not None:
            with torch.no_grad():
                model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(mask_bias)
        folder = Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), folder / "tiny.pt")
        card = {
            "id": "tiny",
            "title": "tiny test model",
            "architecture": arch,
            "categories": [{"id": 1, "name": "nucleus"}],
            "input": {"min_size": 64, "max_size": 96},
            "detections_per_img": 50,
            "weights": {
                "file": "tiny.pt",
                "sha256": hashlib.sha256((folder / "tiny.pt").read_bytes()).hexdigest(),
            },
            "license": "MIT",
        }
        (folder / "tiny.json").write_text(json.dumps(card))
        return "tiny"

    return install


@pytest.fixture
def tiny_card(install_tiny_card) -> str:
    """The id of the tiny user card (see install_tiny_card)."""
    return install_tiny_card()
