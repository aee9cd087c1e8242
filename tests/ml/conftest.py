"""A tiny random-weight model and its card, shared by the predictor and assist tests.

The model's transform resizes to 64-96 px, so an 80x96 image is seen at scale 0.8; its
batch norms are settled on random input so that features are not trivial.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from app.ml.models import build_model
from app.ml.zoo import ModelCard

TINY_CARD = {
    "id": "tiny",
    "title": "tiny random model",
    "architecture": "maskrcnn_mobilenet_v3_fpn",
    "categories": [{"id": 7, "name": "nucleus"}, {"id": 9, "name": "cell"}],
    "input": {"min_size": 64, "max_size": 96},
    "detections_per_img": 50,
    "weights": {"file": "tiny.pt", "sha256": "0" * 64},
}


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.from_dict(TINY_CARD)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=3, min_size=64, max_size=96)
    m.train()  # settle the batch norms' running statistics to something non-trivial
    with torch.no_grad():
        m.backbone(torch.rand(2, 3, 64, 64))
    return m.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), (5, 5), 0)
