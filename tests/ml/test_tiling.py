"""Tiles cover the image with the asked overlap; objects cut by tile borders become one."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml.tiling import MaskCrop, Tile, TilingError, merge_tile_crops, tile_grid


@pytest.mark.parametrize(("w", "h"), [(1000, 700), (6000, 6000), (1333, 1334), (50, 3000)])
def test_tiles_cover_the_image_with_overlap(w: int, h: int) -> None:
    tiles = tile_grid(w, h, 512, 64)
    covered = np.zeros((h, w), dtype=np.uint8)
    for t in tiles:
        assert 0 <= t.x0 < t.x1 <= w and 0 <= t.y0 < t.y1 <= h
        assert t.width == min(512, w) and t.height == min(512, h)
        covered[t.y0 : t.y1, t.x0 : t.x1] = 1
    assert covered.all()
    xs = sorted({t.x0 for t in tiles})
    # Neighbouring tiles overlap by at least the asked amount.
    assert all(b - a <= 512 - 64 for a, b in zip(xs, xs[1:], strict=False))
    assert len(xs) == max(1, -(-(w - 64) // (512 - 64)))  # no more tiles than needed


def test_small_image_is_one_tile_and_bad_settings_are_refused() -> None:
    assert tile_grid(300, 200, 512, 64) == [Tile(0, 0, 300, 200)]
    with pytest.raises(TilingError):
        tile_grid(1000, 1000, 512, 300)
    with pytest.raises(TilingError):
        tile_grid(1000, 1000, 8, 0)


def _disk(cx: int, cy: int, r: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def _seen_by(full: np.ndarray, tiles: list[Tile], label: int = 1) -> list[MaskCrop]:
    """What each tile would report: the object clipped to the tile, cropped to its box."""
    crops = []
    for k, t in enumerate(tiles):
        part = np.zeros_like(full)
        part[t.y0 : t.y1, t.x0 : t.x1] = full[t.y0 : t.y1, t.x0 : t.x1]
        ys, xs = np.nonzero(part)
        if len(xs):
            box = part[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            crops.append(MaskCrop(int(xs.min()), int(ys.min()), box, 0.5 + 0.1 * k, label, k))
    return crops


def _paint(crops: list[MaskCrop], size: int) -> np.ndarray:
    out = np.zeros((size, size), dtype=bool)
    for c in crops:
        out[c.y0 : c.y1, c.x0 : c.x1] |= c.mask
    return out


def test_object_cut_by_tile_borders_is_merged_into_one() -> None:
    tiles = tile_grid(300, 300, 170, 40)  # tiles start at 0 and 130: overlap 130..170
    full = _disk(150, 150, 30, 300)  # sits on the corner of four tiles
    crops = _seen_by(full, tiles)
    assert len(crops) == 4
    merged = merge_tile_crops(crops, tiles)
    assert len(merged) == 1
    assert np.array_equal(_paint(merged, 300), full)
    assert merged[0].score == max(c.score for c in crops)


def test_large_object_cut_in_both_tiles_is_merged() -> None:
    tiles = tile_grid(400, 100, 220, 40)  # overlap 180..220; the object spans 100..300
    full = np.zeros((100, 400), dtype=bool)
    full[30:70, 100:300] = True
    crops = []
    for k, t in enumerate(tiles):
        part = full[:, t.x0 : t.x1]
        ys, xs = np.nonzero(part)
        crops.append(
            MaskCrop(
                t.x0 + xs.min(),
                ys.min(),
                part[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
                0.9,
                1,
                k,
            )
        )
    merged = merge_tile_crops(crops, tiles)
    assert len(merged) == 1
    assert (merged[0].x0, merged[0].x1, merged[0].mask.sum()) == (100, 300, full.sum())


def test_neighbours_and_other_labels_are_not_merged() -> None:
    tiles = tile_grid(300, 300, 170, 40)
    a = _disk(145, 60, 8, 300)
    b = _disk(156, 60, 2, 300)
    crops_a = [c for c in _seen_by(a, tiles) if c.tile == 0]
    crops_b = [c for c in _seen_by(b, tiles) if c.tile == 1]
    assert len(merge_tile_crops(crops_a + crops_b, tiles)) == 2
    same = _disk(150, 60, 8, 300)
    one = [c for c in _seen_by(same, tiles, label=1) if c.tile == 0]
    other = [c for c in _seen_by(same, tiles, label=2) if c.tile == 1]
    assert len(merge_tile_crops(one + other, tiles)) == 2


def test_window_of_a_crop() -> None:
    crop = MaskCrop(10, 20, np.ones((4, 6), dtype=bool), 1.0, 1)
    win = crop.window(12, 18, 20, 22)
    assert win.shape == (4, 8)
    assert win.sum() == 2 * 4  # rows 20-21, columns 12-15
