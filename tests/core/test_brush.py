"""The brush and eraser re-trace their raster with the project's simplify tolerance."""

from __future__ import annotations

import numpy as np

from app.core.document import brush_polygons
from app.core.geometry import mask_to_polygons, polygons_to_mask
from app.core.types import Polygon


def circle(radius: float = 40.0, vertices: int = 200) -> Polygon:
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    return Polygon(100 + radius * np.c_[np.cos(t), np.sin(t)])


def test_a_brush_stroke_on_a_smooth_polygon_leaves_no_staircase():
    """A small stroke on a 200-vertex circle: away from the stroke the outline stays on the
    circle (within the tolerance + 0.5 px) with far fewer vertices than its pixel outline."""
    stroke = np.array([[140.0, 100.0], [142.0, 104.0]])
    (pixels,) = mask_to_polygons(polygons_to_mask([circle()], 200, 200), tolerance=0)
    for tolerance in (0.5, 1.4, 3.0):
        (out,) = brush_polygons(
            [circle()], stroke, 4, erase=False, image_size=(200, 200), tolerance=tolerance
        )
        ring = out.exterior.astype(np.float64)
        t = np.linspace(0, 1, 10)[:, None, None]
        samples = (ring[None] * (1 - t) + np.roll(ring, -1, axis=0)[None] * t).reshape(-1, 2)
        untouched = samples[np.linalg.norm(samples - stroke[0], axis=1) > 12]
        deviation = np.abs(np.linalg.norm(untouched - 100, axis=1) - 40)
        assert deviation.max() < tolerance + 0.5
        assert len(ring) < len(pixels.exterior) / 4
        assert polygons_to_mask([out], 200, 200)[102, 144]  # the stroke was painted


def test_a_brush_at_tolerance_zero_paints_image_pixels():
    base = [Polygon(np.array([[10, 10], [30, 10], [30, 30], [10, 30]], np.float32))]
    out = brush_polygons(base, np.array([[30.0, 20.0]]), 3, erase=False, image_size=(50, 50),
                         tolerance=0)  # fmt: skip
    assert np.all(np.mod(np.concatenate([p.exterior for p in out]), 1) == 0)
