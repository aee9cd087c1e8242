"""Simplification: the one rule (simplify_ring) behind proposals, assists and brush results,
and the project's tolerance setting."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from mask_checks import mask_iou

from app.core.geometry import (
    mask_to_polygons,
    polygons_to_mask,
    simplify_ring,
)
from app.core.simplify_tolerance import (
    DEFAULT_SIMPLIFY_TOLERANCE,
    TOLERANCE_KEY,
    SimplifyToleranceError,
    project_tolerance,
    set_project_tolerance,
)
from app.core.store import ProjectStore
from app.core.types import Polygon


def nuclei(count: int = 60, seed: int = 1) -> list[np.ndarray]:
    """Nucleus-sized ellipses (semi-axes 8-16 px, 200-800 px^2) at sub-pixel positions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        m = np.zeros((64, 64), np.uint8)
        centre = (int(32 * 16 + rng.uniform(-8, 8)), int(32 * 16 + rng.uniform(-8, 8)))
        axes = (int(rng.uniform(8, 16) * 16), int(rng.uniform(8, 16) * 16))
        cv2.ellipse(m, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1, shift=4)
        out.append(m.astype(bool))
    return out


def distance_to_ring(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Each point's distance to the closed ring's nearest edge."""
    a, b = ring.astype(np.float64), np.roll(ring, -1, axis=0).astype(np.float64)
    ab = b - a
    ap = points[:, None, :] - a[None]
    t = np.clip((ap * ab[None]).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12)[None], 0, 1)
    nearest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - nearest, axis=2).min(axis=1)


def test_tolerance_zero_keeps_every_vertex_of_the_trace():
    mask = nuclei(1)[0]
    (exact,) = mask_to_polygons(mask, tolerance=0)
    ring = exact.exterior
    assert simplify_ring(ring, 0) is ring
    assert np.array_equal(polygons_to_mask([exact], 64, 64), mask)


def test_a_larger_tolerance_leaves_fewer_vertices():
    mask = nuclei(1)[0]
    counts = [len(mask_to_polygons(mask, tolerance=t)[0].exterior) for t in (0, 0.5, 1.4, 3.0)]
    assert counts == sorted(counts, reverse=True) and counts[0] > 2 * counts[2] > counts[3]


def test_nucleus_sized_shapes_keep_their_area_at_the_default_tolerance():
    """At 1.4 px the outline keeps IoU >= 0.97 with its raster (median; plain
    Douglas-Peucker, which keeps vertices on the pixel outline, shrinks them below it)."""
    ours, plain, vertices = [], [], []
    for mask in nuclei():
        (poly,) = mask_to_polygons(mask, tolerance=DEFAULT_SIMPLIFY_TOLERANCE)
        ours.append(mask_iou(polygons_to_mask([poly], 64, 64), mask))
        vertices.append(len(poly.exterior))
        (exact,) = mask_to_polygons(mask, tolerance=0)
        dp = cv2.approxPolyDP(exact.exterior.reshape(-1, 1, 2), DEFAULT_SIMPLIFY_TOLERANCE, True)
        plain.append(mask_iou(polygons_to_mask([Polygon(dp.reshape(-1, 2))], 64, 64), mask))
    assert np.median(ours) >= 0.97 and min(ours) >= 0.94
    assert np.median(ours) > np.median(plain) + 0.01
    assert np.median(vertices) <= 12


def test_every_traced_corner_stays_within_the_tolerance_of_the_outline():
    for mask in nuclei(20, seed=3):
        (exact,) = mask_to_polygons(mask, tolerance=0)
        (poly,) = mask_to_polygons(mask, tolerance=1.4)
        assert distance_to_ring(exact.exterior.astype(np.float64), poly.exterior).max() <= 1.4


def test_a_finer_raster_traces_to_image_pixels():
    mask = np.zeros((20, 20), bool)
    mask[4:12, 6:16] = True
    fine = np.kron(mask, np.ones((4, 4), bool))
    (poly,) = mask_to_polygons(fine, tolerance=0, scale=4, offset=(100.0, 0.0))
    (exact,) = mask_to_polygons(mask, tolerance=0, offset=(100.0, 0.0))
    assert np.array_equal(poly.exterior, exact.exterior)


def test_the_project_tolerance_defaults_saves_and_refuses_what_it_cannot_use(tmp_path):
    with ProjectStore.open(tmp_path / "p", create=True) as store:
        assert project_tolerance(store) == DEFAULT_SIMPLIFY_TOLERANCE == 1.4
        assert set_project_tolerance(store, 0.74) == 0.7
        assert project_tolerance(store) == 0.7
        with pytest.raises(SimplifyToleranceError, match="between 0"):
            set_project_tolerance(store, -1)
        store.set_meta(TOLERANCE_KEY, "lots")
        assert project_tolerance(store) == DEFAULT_SIMPLIFY_TOLERANCE


def test_a_ring_through_one_point_twice_is_simplified_too():
    """Two squares touching at a corner are one part whose outline passes that corner twice."""
    mask = np.zeros((30, 30), bool)
    mask[2:14, 2:14] = True
    mask[14:26, 14:26] = True
    mask[2, 2:14:2] = False  # a notched edge for the tolerance to straighten
    (exact,) = mask_to_polygons(mask, tolerance=0, min_area=0)
    assert len({tuple(p) for p in exact.exterior.tolist()}) < len(exact.exterior)
    (simple,) = mask_to_polygons(mask, tolerance=1.4, min_area=0)
    assert len(simple.exterior) < len(exact.exterior)
    assert mask_iou(polygons_to_mask([simple], 30, 30), mask) >= 0.95
