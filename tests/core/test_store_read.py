"""The batched read path: one image's instances decoded together, exactly as one by one."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.polygon_codec import (
    GeometryDecodeError,
    decode_many,
    decode_polygons,
    encode_polygons,
)
from app.core.store import NewImage, NotFoundError, ProjectStore
from app.core.types import Instance, Polygon, Source

RNG = np.random.default_rng(7)


def ring(n: int, x: float = 0.0) -> np.ndarray:
    return (RNG.random((n, 2)) * 50 + x).astype(np.float32)


MIXED = [
    [Polygon(ring(40))],  # the common cell: one ring
    [Polygon(ring(12), [ring(3, 10), ring(4, 20)])],  # holes
    [Polygon(ring(5)), Polygon(ring(6, 100))],  # two parts
    [],  # no polygon
    [Polygon(np.zeros((0, 2), np.float32))],  # an empty ring
    [Polygon(ring(3))],
]


def test_decode_many_equals_decoding_one_by_one():
    blobs = [encode_polygons(p) for p in MIXED]
    many = decode_many(blobs)
    assert many == [decode_polygons(b) for b in blobs] == MIXED
    assert decode_many([]) == []


def test_decoded_rings_are_writable_and_independent():
    a, b = decode_many([encode_polygons(MIXED[0]), encode_polygons(MIXED[5])])
    before = b[0].exterior.copy()
    a[0].exterior[-1] = (999.0, 999.0)  # the last point sits next to b's bytes in the batch
    assert a[0].exterior.flags.writeable and a[0].exterior.dtype == np.float32
    np.testing.assert_array_equal(b[0].exterior, before)


def test_decode_many_reports_damaged_blobs():
    good = encode_polygons(MIXED[0])
    for damaged in (good[:-8], good + b"\0" * 8, good[:-1]):
        with pytest.raises(GeometryDecodeError):
            decode_many([encode_polygons(MIXED[1]), damaged])


@pytest.fixture
def store(tmp_path):
    s = ProjectStore.open(tmp_path / "proj", create=True)
    s.add_images([NewImage("a.png", 64, 64), NewImage("b.png", 64, 64)])
    s.add_category("cell")
    yield s
    s.close()


def test_instances_read_back_exactly_in_id_order(store):
    saved = store.add_instances(
        1,
        [
            Instance(1, polys, score=0.5 if k % 2 else None, source=list(Source)[k % 3])
            for k, polys in enumerate(MIXED)
        ],
    )
    store.add_instances(2, [Instance(1, MIXED[0])])
    back = store.instances(1)
    assert [i.id for i in back] == sorted(i.id for i in saved)
    assert back == saved
    assert all(isinstance(i.source, Source) for i in back)
    assert store.instance(saved[1].id) == saved[1]
    with pytest.raises(NotFoundError):
        store.instance(10_000)
    assert store.instances(99) == []
