"""RoIAlign for CPU inference as a weighted gather of feature rows (same numbers, 4-6x faster).

torchvision's CPU ``roi_align`` loops over channels in scalar code: pooling 2,000 region
proposals to 7x7 on one 256-channel FPN level took 0.85 s on one core, the largest single
stage of the bundled cells model on a crowded 800x1066 image. With channels-last features
every sample point is a bilinear blend of four contiguous rows of 256 floats, so a whole
output bin (its sampling_ratio^2 points x 4 corners) is one bag of ``F.embedding_bag`` with
per-sample weights: 0.15 s for the same 2,000 boxes, and the 14x14 mask pooling 4x faster.

The sample positions and corner weights reproduce torchvision's ``aligned=False`` kernel
(``roi_align_kernel.cpp``: boxes at least 1 feature pixel, points beyond [-1, size] count
zero, points in [-1, 0] clamp to the edge), so outputs agree to float rounding (~1e-6).
Inference only: used by the predictor on the CPU; training keeps torchvision's op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


def roi_align_rows(
    feature: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    """torchvision ``roi_align(..., aligned=False)`` with a fixed ``sampling_ratio`` > 0.

    ``feature`` (B, C, H, W), fastest channels-last; ``rois`` (K, 5) rows of
    (batch index, x0, y0, x1, y1) in image pixels. Returns (K, C, *output_size).
    """
    if sampling_ratio <= 0:
        raise ValueError("roi_align_rows needs a fixed sampling_ratio > 0")
    batch, channels, height, width = feature.shape
    out_h, out_w = output_size
    k = rois.shape[0]
    if k == 0:
        return feature.new_zeros((0, channels, out_h, out_w))
    rows = feature.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    r = rois.to(feature.dtype)
    start_x, start_y = r[:, 1] * spatial_scale, r[:, 2] * spatial_scale
    bin_w = (r[:, 3] * spatial_scale - start_x).clamp(min=1.0) / out_w
    bin_h = (r[:, 4] * spatial_scale - start_y).clamp(min=1.0) / out_h
    ys = _sample_points(start_y, bin_h, out_h, sampling_ratio)  # (K, out_h, sr)
    xs = _sample_points(start_x, bin_w, out_w, sampling_ratio)  # (K, out_w, sr)
    y_lo, y_hi, wy_lo, wy_hi = _corners(ys, height)
    x_lo, x_hi, wx_lo, wx_hi = _corners(xs, width)

    def along_y(t: Tensor) -> Tensor:  # (K, out_h, 1, sr, 1)
        return t[:, :, None, :, None]

    def along_x(t: Tensor) -> Tensor:  # (K, 1, out_w, 1, sr)
        return t[:, None, :, None, :]

    base = (rois[:, 0].to(torch.int64) * (height * width))[:, None, None, None, None]
    top, bottom = base + along_y(y_lo) * width, base + along_y(y_hi) * width
    index = torch.stack(
        [top + along_x(x_lo), top + along_x(x_hi), bottom + along_x(x_lo), bottom + along_x(x_hi)],
        dim=-1,
    )
    weight = torch.stack(
        [
            along_y(wy_lo) * along_x(wx_lo),
            along_y(wy_lo) * along_x(wx_hi),
            along_y(wy_hi) * along_x(wx_lo),
            along_y(wy_hi) * along_x(wx_hi),
        ],
        dim=-1,
    ) / (sampling_ratio * sampling_ratio)
    shape = (k, out_h, out_w, sampling_ratio, sampling_ratio, 4)
    index, weight = index.expand(shape).reshape(-1), weight.expand(shape).reshape(-1)
    bag = sampling_ratio * sampling_ratio * 4
    offsets = torch.arange(0, index.numel(), bag, device=index.device)
    pooled = F.embedding_bag(index, rows, offsets, mode="sum", per_sample_weights=weight)
    return pooled.reshape(k, out_h, out_w, channels).permute(0, 3, 1, 2)


def _sample_points(start: Tensor, bin_size: Tensor, bins: int, ratio: int) -> Tensor:
    """start + bin * size + (i + 0.5) * size / ratio, in the kernel's order of operations."""
    size = bin_size[:, None, None]
    grid = torch.arange(bins, dtype=start.dtype, device=start.device)[None, :, None] * size
    inner = (torch.arange(ratio, dtype=start.dtype, device=start.device) + 0.5)[None, None, :]
    return start[:, None, None] + grid + inner * size / ratio


def _corners(v: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Low/high neighbour indices and their weights along one axis (zero weight outside)."""
    inside = ((v >= -1.0) & (v <= size)).to(v.dtype)
    v = v.clamp(min=0.0)
    low = v.to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(v), v - low.to(v.dtype))
    return low, high, (1.0 - frac) * inside, frac * inside


class LevelRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign``'s feature levels and box-to-level mapping, for poolers that
    pool each level their own way (here on the CPU, in the ONNX export for onnxruntime)."""

    @classmethod
    def like(cls, pool: MultiScaleRoIAlign) -> LevelRoIAlign:
        """A pooler of this class with ``pool``'s levels, output size and sampling."""
        return cls(
            pool.featmap_names,
            pool.output_size,
            pool.sampling_ratio,
            canonical_scale=pool.canonical_scale,
            canonical_level=pool.canonical_level,
        )

    def _inputs(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], Tensor, tuple[int, ...]]:
        """The pooled levels' features, the boxes as RoIs (batch index first), the output size."""
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        return features, _convert_to_roi_format(boxes), tuple(self.output_size)


class RowRoIAlign(LevelRoIAlign):
    """``MultiScaleRoIAlign`` with the same level mapping, pooling with :func:`roi_align_rows`."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features, rois, size = self._inputs(x, boxes, image_shapes)
        if len(features) == 1:
            return roi_align_rows(features[0], rois, size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        first = features[0]
        result = first.new_zeros((len(rois), first.shape[1], *size))
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            where = torch.where(levels == level)[0]
            if len(where):
                result[where] = roi_align_rows(
                    feature, rois[where], size, scale, self.sampling_ratio
                )
        return result


def use_row_roi_align(model: nn.Module) -> int:
    """Swap a Mask R-CNN's box and mask poolers for :class:`RowRoIAlign`; returns how many."""
    heads = model.roi_heads
    swapped = 0
    for name in ("box_roi_pool", "mask_roi_pool"):
        pool = getattr(heads, name, None)
        if type(pool) is MultiScaleRoIAlign and pool.sampling_ratio > 0:
            setattr(heads, name, RowRoIAlign.like(pool))
            swapped += 1
    return swapped
