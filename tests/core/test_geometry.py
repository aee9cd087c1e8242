"""Geometry: exact and simplified mask <-> polygon round trips, RLE, label maps."""

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from mask_checks import mask_iou, polygons_area
from pycocotools import mask as mask_utils

from app.core.geometry import (
    DEFAULT_TOLERANCE,
    GeometryError,
    crop_to_rle,
    label_map_to_instances,
    mask_to_polygons,
    polygons_bbox,
    polygons_to_mask,
    polygons_to_rle,
    rle_counts,
    rle_decode,
    rle_encode,
)
from app.core.types import Polygon

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24))))
def test_exact_round_trip_of_any_mask(mask):
    polygons = mask_to_polygons(mask, tolerance=0, min_area=0)
    assert np.array_equal(polygons_to_mask(polygons, *mask.shape), mask)
    assert polygons_to_rle(polygons, *mask.shape) == rle_encode(mask)


@st.composite
def blobs(draw):
    """Masks of ellipses >= 20 px across, some overlapping, some with holes."""
    h, w = 96, 112
    mask = np.zeros((h, w), np.uint8)
    for _ in range(draw(st.integers(1, 3))):
        cx, cy = draw(st.integers(20, w - 20)), draw(st.integers(20, h - 20))
        a, b = draw(st.integers(10, 18)), draw(st.integers(10, 18))
        cv2.ellipse(mask, (cx, cy), (a, b), draw(st.integers(0, 179)), 0, 360, 1, -1)
        if draw(st.booleans()):
            cv2.circle(mask, (cx, cy), draw(st.integers(3, 6)), 0, -1)
    return mask.astype(bool)


@FAST
@given(blobs())
def test_default_tolerance_keeps_iou(mask):
    polygons = mask_to_polygons(mask)
    assert mask_iou(polygons_to_mask(polygons, *mask.shape), mask) >= 0.98


def test_holes_parts_and_offset():
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:40] = True
    mask[20:30, 20:30] = False  # hole
    mask[45:55, 60:75] = True  # second, smaller part
    polygons = mask_to_polygons(mask, tolerance=0)
    assert len(polygons) == 2
    assert len(polygons[0].holes) == 1 and not polygons[1].holes
    assert polygons_area(polygons) == mask.sum()
    assert polygons_bbox(polygons) == (10.0, 10.0, 65.0, 45.0)
    moved = mask_to_polygons(mask, tolerance=0, offset=(100.0, 7.0))
    assert np.array_equal(moved[0].exterior, polygons[0].exterior + (100, 7))


def test_pixel_edge_convention_matches_pycocotools():
    square = [Polygon([[2, 3], [5, 3], [5, 7], [2, 7]])]
    mask = polygons_to_mask(square, 10, 10)
    assert mask.sum() == 12 and mask[3:7, 2:5].all()
    ref = mask_utils.decode(mask_utils.frPyObjects([[2, 3, 5, 3, 5, 7, 2, 7]], 10, 10))
    assert np.array_equal(mask, ref[:, :, 0].astype(bool))
    single = np.zeros((5, 5), bool)
    single[1, 2] = True
    (poly,) = mask_to_polygons(single, tolerance=0, min_area=0)
    assert sorted(map(tuple, poly.exterior.tolist())) == [(2, 1), (2, 2), (3, 1), (3, 2)]


def test_min_area_drops_specks_and_small_holes():
    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    mask[10, 10] = False  # one-pixel hole
    mask[35, 35] = True  # one-pixel speck
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1 and not polygons[0].holes
    assert len(mask_to_polygons(mask, min_area=0)) == 2


def test_polygons_outside_the_image_are_clipped_and_bad_ones_refused():
    poly = [Polygon([[-5, -5], [3, -5], [3, 3], [-5, 3]])]
    assert polygons_to_mask(poly, 10, 10).sum() == 9
    assert not polygons_to_mask([Polygon([[20, 20], [30, 20], [30, 30]])], 10, 10).any()
    with pytest.raises(GeometryError):
        polygons_to_mask([Polygon([[0, 0], [np.nan, 0], [3, 3]])], 10, 10)


def _naive(labels):
    return {
        int(v): mask_to_polygons(labels == v)
        for v in np.unique(labels)
        if v and (labels == v).any()
    }


def test_label_map_matches_naive_and_keeps_touching_cells_apart():
    labels = np.zeros((64, 64), np.uint16)
    labels[10:30, 10:30] = 1
    labels[10:30, 30:50] = 2  # touches 1
    cv2.circle(labels, (40, 50), 9, 700, -1)
    labels[0:3, 60:64] = 3
    out = label_map_to_instances(labels)
    assert list(out) == [1, 2, 3, 700]
    assert out == _naive(labels)
    assert polygons_to_mask(out[2], 64, 64).sum() == 400


@FAST
@given(arrays(np.uint8, (20, 24), elements=st.integers(0, 4)))
def test_label_map_exact_per_id(labels):
    out = label_map_to_instances(labels, tolerance=0, min_area=0)
    for value, polygons in out.items():
        assert np.array_equal(polygons_to_mask(polygons, 20, 24), labels == value)
    assert set(out) == {int(v) for v in np.unique(labels) if v}


def test_label_map_refuses_bad_input():
    with pytest.raises(GeometryError):
        label_map_to_instances(np.full((4, 4), -1, np.int32))
    with pytest.raises(GeometryError):
        label_map_to_instances(np.full((4, 4), 1.5))
    assert label_map_to_instances(np.zeros((4, 4), np.uint8)) == {}


@FAST
@given(arrays(np.bool_, st.tuples(st.integers(1, 16), st.integers(1, 16))))
def test_rle_round_trips_compressed_and_uncompressed(mask):
    rle = rle_encode(mask)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(rle_decode(rle), mask)
    ref = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(ref.astype(bool), mask)
    counts = rle_counts(rle).tolist()
    assert np.array_equal(rle_decode({"size": list(mask.shape), "counts": counts}), mask)
    assert np.array_equal(rle_decode({"counts": counts}, *mask.shape), mask)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.integers(0, 20), st.integers(0, 20))
def test_malformed_rle_raises_only_geometry_error(counts, h, w):
    try:
        mask = rle_decode({"size": [h, w], "counts": counts})
    except GeometryError:
        return
    assert mask.shape == (h, w)


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [2, 2], "counts": [1, 2]},  # too few pixels
        {"size": [2, 2], "counts": [5, -1]},
        {"size": [2, "x"], "counts": [4]},
        {"size": [2, 2], "counts": "0o"},  # ends mid-number
        {"size": [2, 2], "counts": 3},
        {"counts": [4]},  # no size anywhere
    ],
)
def test_rle_errors(rle):
    with pytest.raises(GeometryError):
        rle_decode(rle)


def test_rle_size_must_match_the_image():
    with pytest.raises(GeometryError):
        rle_decode(rle_encode(np.ones((3, 4), bool)), 4, 3)


def test_crop_to_rle_merges_runs_across_columns():
    crop = np.ones((5, 3), bool)  # full height: the runs of all columns join
    rle = crop_to_rle(crop, 1, 0, 5, 6)
    full = np.zeros((5, 6), bool)
    full[:, 1:4] = True
    assert rle == rle_encode(full)


def test_default_tolerance_simplifies_straight_and_diagonal_edges():
    mask = np.zeros((80, 80), np.uint8)
    cv2.fillPoly(mask, [np.array([[10, 10], [70, 30], [40, 70]])], 1)
    exact = mask_to_polygons(mask, tolerance=0)
    simple = mask_to_polygons(mask, tolerance=DEFAULT_TOLERANCE * 2)
    assert len(simple[0].exterior) < len(exact[0].exterior) / 3
