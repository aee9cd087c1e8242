"""Reduced precision: which parts change dtype, what each choice resolves to, and that the
bundled model's proposals survive bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.core.geometry import polygons_to_mask
from app.demo.synthetic import generate_sample
from app.errors import MaskLoopError
from app.ml import zoo
from app.ml.models import build_model
from app.ml.precision import (
    LowPrecision,
    Precision,
    precision_name,
    reduce_precision,
    resolve_dtype,
)
from app.ml.predictor import Predictor

CPU = torch.device("cpu")


def test_resolve_dtype_on_the_cpu() -> None:
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype(Precision.FP32, CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16
    with pytest.raises(MaskLoopError, match="fp16 is for GPUs"):
        resolve_dtype("fp16", CPU)
    with pytest.raises(MaskLoopError, match="Unknown precision 'half'"):
        resolve_dtype("half", CPU)


def test_auto_on_cuda_prefers_bf16(monkeypatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("fp32", cuda) == torch.float32


def test_only_the_convolutional_parts_are_reduced() -> None:
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=3, min_size=64, max_size=64)
    assert reduce_precision(model, torch.float32) == []
    changed = reduce_precision(model, torch.bfloat16)
    assert changed == [
        "backbone",
        "rpn.head.conv",
        "roi_heads.mask_head",
        "roi_heads.mask_predictor",
    ]
    assert isinstance(model.backbone, LowPrecision)
    assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.roi_heads.mask_head.parameters()} == {torch.bfloat16}
    # Box regression and the RPN's objectness/deltas stay float32.
    for part in (model.roi_heads.box_head, model.roi_heads.box_predictor):
        assert {p.dtype for p in part.parameters()} == {torch.float32}
    assert model.rpn.head.cls_logits.weight.dtype == torch.float32
    assert model.rpn.head.bbox_pred.weight.dtype == torch.float32
    assert reduce_precision(model, torch.bfloat16) == []  # already done: nothing wrapped twice
    model.eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 64, 64)])[0]
    assert out["boxes"].dtype == torch.float32
    assert out["masks"].dtype == torch.float32


def test_low_precision_returns_float32_containers() -> None:
    part = LowPrecision(torch.nn.Conv2d(3, 4, 3), torch.bfloat16)
    out = part(torch.rand(1, 3, 8, 8))
    assert out.dtype == torch.float32
    assert precision_name(torch.bfloat16) == "bf16"
    assert precision_name(torch.float32) == "fp32"


def test_bundled_model_proposals_survive_bf16() -> None:
    """bf16 changes single pixels, not what the annotator is shown."""
    card = zoo.get_card("cells-mobile")
    sample = generate_sample(5, size=(384, 384), bit_depth=16, n_cells=40, cell_radius=(8, 12))
    exact = Predictor(card, device="cpu", precision="fp32")
    fast = Predictor(card, device="cpu", precision="bf16")
    assert exact.device_name.endswith("fp32)") and fast.device_name.endswith("bf16)")
    a, b = exact.predict(sample.image), fast.predict(sample.image)
    assert len(a) >= 20
    assert abs(len(a) - len(b)) <= max(1, len(a) // 20)
    h, w = sample.image.shape[:2]
    masks_b = [polygons_to_mask(i.polygons, h, w) for i in b]
    best = []
    for inst in a:
        m = polygons_to_mask(inst.polygons, h, w)
        best.append(max(np.count_nonzero(m & o) / np.count_nonzero(m | o) for o in masks_b))
    assert np.median(best) >= 0.97
    assert np.mean(np.asarray(best) >= 0.8) >= 0.95
