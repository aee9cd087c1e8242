"""Overlapping tiles for large images, and merging the instances cut by tile borders.

A model resizes its input to ``min_size``..``max_size``, so a 6,000 px slide seen whole
loses its small objects and, pasted back at full size, costs one full-image mask per
instance. Tiles keep the native resolution; each instance is kept as a mask over its own
box only (:class:`MaskCrop`), so memory grows with the objects, not with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.errors import MaskLoopError


class TilingError(MaskLoopError):
    """Tile size and overlap do not make sense together."""


@dataclass(frozen=True)
class Tile:
    """A window [x0, x1) x [y0, y1) of the image, in pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass
class MaskCrop:
    """One detection: a boolean mask over its box region, placed at (x0, y0) in the image."""

    x0: int
    y0: int
    mask: np.ndarray
    score: float
    label: int
    tile: int = 0

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The mask inside an image window (zeros where the crop does not reach)."""
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=bool)
        ix0, iy0 = max(x0, self.x0), max(y0, self.y0)
        ix1, iy1 = min(x1, self.x1), min(y1, self.y1)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.mask[
                iy0 - self.y0 : iy1 - self.y0, ix0 - self.x0 : ix1 - self.x0
            ]
        return out


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced tile starts; the last tile ends at the border (no thin sliver tiles)."""
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))  # ceil
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_grid(width: int, height: int, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles of ``tile_size`` (smaller only where the image is) overlapping by >= ``overlap``."""
    if tile_size < 16:
        raise TilingError(f"tile size {tile_size} is too small; use at least 16 pixels.")
    if not 0 <= overlap < tile_size // 2:
        raise TilingError(
            f"tile overlap {overlap} must be between 0 and half the tile size ({tile_size})."
        )
    return [
        Tile(x, y, min(x + tile_size, width), min(y + tile_size, height))
        for y in _starts(height, tile_size, overlap)
        for x in _starts(width, tile_size, overlap)
    ]


def _window_iou(a: MaskCrop, b: MaskCrop, win: Tile) -> float:
    ma = a.window(win.x0, win.y0, win.x1, win.y1)
    mb = b.window(win.x0, win.y0, win.x1, win.y1)
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0


def _union(crops: list[MaskCrop]) -> MaskCrop:
    x0, y0 = min(c.x0 for c in crops), min(c.y0 for c in crops)
    x1, y1 = max(c.x1 for c in crops), max(c.y1 for c in crops)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for c in crops:
        mask[c.y0 - y0 : c.y1 - y0, c.x0 - x0 : c.x1 - x0] |= c.mask
    best = max(crops, key=lambda c: c.score)
    return MaskCrop(x0, y0, mask, best.score, best.label, best.tile)


def merge_tile_crops(
    crops: list[MaskCrop], tiles: list[Tile], *, iou_threshold: float = 0.5
) -> list[MaskCrop]:
    """Join detections of one object seen by several overlapping tiles.

    Two detections of different tiles with the same label are the same object when their
    masks agree inside the window both tiles saw (IoU there >= ``iou_threshold``): an object
    cut by one tile's border is whole, or at least cut elsewhere, in its neighbour. Merged
    objects are the union of the parts and keep the best score.
    """
    if len(tiles) < 2 or len(crops) < 2:
        return list(crops)
    parent = list(range(len(crops)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = np.array([[c.x0, c.y0, c.x1, c.y1] for c in crops], dtype=np.int64)
    tile_of = np.array([c.tile for c in crops])
    labels = np.array([c.label for c in crops])
    by_tile = {t: np.flatnonzero(tile_of == t) for t in range(len(tiles))}
    for ta in range(len(tiles)):
        for tb in range(ta + 1, len(tiles)):
            a, b = tiles[ta], tiles[tb]
            shared = Tile(max(a.x0, b.x0), max(a.y0, b.y0), min(a.x1, b.x1), min(a.y1, b.y1))
            if shared.width <= 0 or shared.height <= 0:
                continue
            ia = _touching(by_tile[ta], boxes, shared)
            ib = _touching(by_tile[tb], boxes, shared)
            if not len(ia) or not len(ib):
                continue
            # Pairs whose boxes overlap inside the shared window and whose labels agree.
            ba, bb = boxes[ia][:, None, :], boxes[ib][None, :, :]
            meet = (
                (np.minimum(ba[..., 2], bb[..., 2]) > np.maximum(ba[..., 0], bb[..., 0]))
                & (np.minimum(ba[..., 3], bb[..., 3]) > np.maximum(ba[..., 1], bb[..., 1]))
                & (labels[ia][:, None] == labels[ib][None, :])
            )
            for i, j in zip(*np.nonzero(meet), strict=True):
                p, q = int(ia[i]), int(ib[j])
                if find(p) != find(q) and _window_iou(crops[p], crops[q], shared) >= iou_threshold:
                    parent[find(q)] = find(p)
    groups: dict[int, list[MaskCrop]] = {}
    for i, crop in enumerate(crops):
        groups.setdefault(find(i), []).append(crop)
    return [g[0] if len(g) == 1 else _union(g) for g in groups.values()]


def _touching(indices: np.ndarray, boxes: np.ndarray, win: Tile) -> np.ndarray:
    if not len(indices):
        return indices
    b = boxes[indices]
    inside = (b[:, 0] < win.x1) & (b[:, 2] > win.x0) & (b[:, 1] < win.y1) & (b[:, 3] > win.y0)
    return indices[inside]
