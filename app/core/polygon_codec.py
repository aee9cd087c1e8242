"""Compact binary form of an instance's polygons for the store.

Layout (little-endian): uint32 header length H, then H uint32 counts — the number of
polygons, then per polygon its ring count followed by each ring's point count (outer ring
first, then holes) — then every ring's points as float32 x, y pairs. A 40-vertex cell takes
~340 bytes, and decoding is two ``np.frombuffer`` calls and slicing. :func:`decode_many`
decodes one image's instances together, because an image with thousands of cells is decoded
every time it is opened.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from app.core.types import Polygon
from app.errors import MaskLoopError

# The header of one polygon without holes (header length 3, 1 polygon, 1 ring, n points).
_SIMPLE_HEAD = struct.Struct("<4I")


class GeometryDecodeError(MaskLoopError):
    """A stored geometry blob is damaged."""


def encode_polygons(polygons: Sequence[Polygon]) -> bytes:
    header: list[int] = [len(polygons)]
    rings: list[np.ndarray] = []
    for polygon in polygons:
        poly_rings = [polygon.exterior, *polygon.holes]
        header.append(len(poly_rings))
        for ring in poly_rings:
            header.append(len(ring))
            rings.append(ring)
    head = np.asarray(header, dtype="<u4")
    coords = np.concatenate(rings).astype("<f4", copy=False) if rings else np.empty((0, 2), "<f4")
    return np.uint32(len(head)).astype("<u4").tobytes() + head.tobytes() + coords.tobytes()


def decode_polygons(blob: bytes) -> list[Polygon]:
    try:
        n_head = int(np.frombuffer(blob, dtype="<u4", count=1)[0])
        head = np.frombuffer(blob, dtype="<u4", count=n_head, offset=4).tolist()
        # astype copies: stored rings come back writable and native-endian.
        coords = np.frombuffer(blob, dtype="<f4", offset=4 + 4 * n_head).astype(np.float32)
        coords = coords.reshape(-1, 2)
        polygons: list[Polygon] = []
        pos, point = 1, 0
        for _ in range(head[0]):
            n_rings = head[pos]
            pos += 1
            rings = []
            for _ in range(n_rings):
                n = head[pos]
                pos += 1
                rings.append(coords[point : point + n])
                point += n
            polygons.append(Polygon(rings[0], rings[1:]))
    except (ValueError, IndexError) as exc:
        raise GeometryDecodeError(f"a stored instance geometry is damaged: {exc}") from exc
    if point != len(coords):
        raise GeometryDecodeError("a stored instance geometry is damaged: trailing points")
    return polygons


def decode_many(blobs: Sequence[bytes]) -> list[list[Polygon]]:
    """The polygons of many blobs, as :func:`decode_polygons` would give them, ~2x faster.

    Every float of every blob is converted in one numpy call; a cell without holes or parts
    (nearly every instance) then costs one slice. Its ring is a writable view of its own
    region of that array; other blobs go through :func:`decode_polygons`.
    """
    if any(len(blob) % 4 for blob in blobs):
        return [decode_polygons(blob) for blob in blobs]  # a damaged blob: report it
    floats = np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32)
    out: list[list[Polygon]] = []
    start = 0
    for blob in blobs:
        words = len(blob) // 4
        head = _SIMPLE_HEAD.unpack_from(blob) if words >= 4 else None
        if head is not None and head[:3] == (3, 1, 1) and words == 4 + 2 * head[3]:
            out.append([Polygon(floats[start + 4 : start + words].reshape(-1, 2))])
        else:
            out.append(decode_polygons(blob))
        start += words
    return out
