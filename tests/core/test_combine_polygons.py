"""Adding and removing a region on an outline (Shift/Alt+click in the box tool)."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.document import combine_polygons
from app.core.geometry import ring_area
from app.core.types import Polygon

SIZE = (100, 100)


def square(x0: float, y0: float, x1: float, y1: float, holes=()) -> Polygon:
    ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    return Polygon(ring, [square(*h).exterior for h in holes])


def area(polygons: list[Polygon]) -> float:
    return sum(ring_area(p.exterior) - sum(ring_area(h) for h in p.holes) for p in polygons)


def test_an_overlapping_region_is_united_into_one_part():
    out = combine_polygons(
        [square(10, 10, 30, 30)], [square(20, 20, 40, 40)], subtract=False, image_size=SIZE,
        tolerance=0,
    )  # fmt: skip
    assert out.changed
    assert len(out.polygons) == 1
    assert area(out.polygons) == 400 + 400 - 100


def test_a_disjoint_region_becomes_a_second_part_and_holes_are_kept():
    ring = square(10, 10, 40, 40, holes=[(20, 20, 30, 30)])
    out = combine_polygons(
        [ring], [square(60, 60, 70, 70)], subtract=False, image_size=SIZE, tolerance=0
    )
    assert out.changed
    assert sorted(len(p.holes) for p in out.polygons) == [0, 1]
    assert area(out.polygons) == 900 - 100 + 100


def test_a_subtracted_region_cuts_a_hole_or_a_corner():
    inner = combine_polygons(
        [square(10, 10, 40, 40)], [square(20, 20, 30, 30)], subtract=True, image_size=SIZE,
        tolerance=0,
    )  # fmt: skip
    assert [len(p.holes) for p in inner.polygons] == [1]
    assert area(inner.polygons) == 800
    corner = combine_polygons(
        [square(10, 10, 40, 40)], [square(30, 30, 50, 50)], subtract=True, image_size=SIZE,
        tolerance=1.4,
    )  # fmt: skip
    assert area(corner.polygons) == pytest.approx(800, abs=20)


def test_subtracting_everything_leaves_no_polygons():
    out = combine_polygons(
        [square(10, 10, 20, 20)], [square(5, 5, 25, 25)], subtract=True, image_size=SIZE
    )
    assert out.changed and out.polygons == []


def test_a_region_that_changes_no_pixel_reports_it_and_keeps_the_outline():
    base = [square(10, 10, 40, 40)]
    inside = combine_polygons(base, [square(20, 20, 30, 30)], subtract=False, image_size=SIZE)
    apart = combine_polygons(base, [square(60, 60, 70, 70)], subtract=True, image_size=SIZE)
    for out in (inside, apart):
        assert not out.changed
        assert np.array_equal(out.polygons[0].exterior, base[0].exterior)


def test_the_union_is_clipped_to_the_image():
    out = combine_polygons(
        [square(80, 80, 95, 95)], [square(90, 90, 130, 130)], subtract=False,
        image_size=SIZE, tolerance=0,
    )  # fmt: skip
    assert np.concatenate([p.exterior for p in out.polygons]).max() <= 100
    assert area(out.polygons) == 225 + 100 - 25


def test_a_subtraction_drops_the_sliver_it_leaves_but_not_other_parts():
    """The removing click's region is a little off the part it should take away: the 1 px
    strip left along the cut goes; a separate small part elsewhere stays."""
    part = square(10, 10, 30, 30)
    elsewhere = square(60, 60, 63, 63)  # small, but not touched by the cut
    out = combine_polygons(
        [part, elsewhere], [square(11, 8, 32, 32)], subtract=True, image_size=SIZE, tolerance=0
    )
    assert out.changed
    assert area(out.polygons) == 9  # the 1x20 strip x in [10, 11] is gone, the small part kept
    big = combine_polygons(
        [square(10, 10, 40, 40)], [square(10, 10, 40, 20)], subtract=True, image_size=SIZE,
        tolerance=0,
    )  # fmt: skip
    assert area(big.polygons) == 600  # what remains of a real cut is no sliver
