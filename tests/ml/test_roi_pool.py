"""The gathered RoIAlign against torchvision's own op: same numbers, edge cases included."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from app.ml.models import build_model
from app.ml.roi_pool import RowRoIAlign, roi_align_rows, use_row_roi_align


def _boxes(n: int, width: float, height: float, seed: int = 0) -> torch.Tensor:
    """Boxes of every kind: inside, cut by every border, sub-pixel, thin, one beyond the map."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, generator=g) * (width + 20) - 10
    y0 = torch.rand(n, generator=g) * (height + 20) - 10
    w = torch.rand(n, generator=g) * 60 + 0.2
    h = torch.rand(n, generator=g) * 60 + 0.2
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], 1)
    edge = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.5],
            [width - 1, height - 1, width + 3, height + 3],
            [-4.0, 10.0, -1.0, 30.0],
            [width + 8, 0.0, width + 30, 5.0],
            [3.0, 3.0, 3.0, 3.0],
        ]
    )
    return torch.cat([boxes, edge])


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("size", "ratio", "scale"), [(7, 2, 0.25), (14, 2, 0.125), (3, 1, 0.5)])
def test_matches_torchvision_roi_align(channels_last, size, ratio, scale) -> None:
    torch.manual_seed(0)
    feature = torch.randn(2, 16, 23, 31)
    if channels_last:
        feature = feature.contiguous(memory_format=torch.channels_last)
    boxes = _boxes(60, 31 / scale, 23 / scale)
    batch = torch.arange(len(boxes)) % 2
    rois = torch.cat([batch[:, None].float(), boxes], 1)
    ours = roi_align_rows(feature, rois, (size, size), scale, ratio)
    ref = roi_align(feature, rois, size, scale, ratio, aligned=False)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=2e-6, rtol=1e-5)


def test_no_boxes_and_adaptive_ratio() -> None:
    feature = torch.randn(1, 4, 8, 8)
    assert roi_align_rows(feature, torch.zeros(0, 5), (7, 7), 1.0, 2).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_rows(feature, torch.zeros(1, 5), (7, 7), 1.0, 0)


def test_multiscale_pooler_matches_torchvision() -> None:
    torch.manual_seed(1)
    names = ["0", "1", "2", "3"]
    features = {
        n: torch.randn(1, 8, 64 >> k, 96 >> k).contiguous(memory_format=torch.channels_last)
        for k, n in enumerate(names)
    }
    boxes = [_boxes(80, 384, 256).clamp(min=0)]
    boxes[0][:, 2:] = torch.maximum(boxes[0][:, 2:], boxes[0][:, :2] + 0.5)
    ref_pool = MultiScaleRoIAlign(names, 7, 2)
    ref = ref_pool(features, boxes, [(256, 384)])
    ours = RowRoIAlign(names, 7, 2)(features, boxes, [(256, 384)])
    assert torch.allclose(ours, ref, atol=2e-6, rtol=1e-5)


def test_model_outputs_unchanged_by_the_swap() -> None:
    torch.manual_seed(0)
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=3, min_size=96, max_size=128)
    model.eval().roi_heads.score_thresh = 0.0
    x = [torch.rand(3, 96, 128)]
    with torch.inference_mode():
        ref = model(x)[0]
        assert use_row_roi_align(model) == 2
        assert use_row_roi_align(model) == 0  # already swapped
        ours = model(x)[0]
    assert isinstance(model.roi_heads.box_roi_pool, RowRoIAlign)
    assert torch.equal(ours["labels"], ref["labels"])
    assert torch.allclose(ours["boxes"], ref["boxes"], atol=1e-3)
    assert torch.allclose(ours["scores"], ref["scores"], atol=1e-5)
    assert torch.allclose(ours["masks"], ref["masks"], atol=1e-4)
