"""Masks <-> polygons with holes, simplification, ring area, bbox and COCO RLE.

Coordinate convention (the same as COCO, pycocotools, PIL and torchvision boxes): a vertex
(x, y) is a point in continuous image coordinates where pixel (column c, row r) covers the
square [c, c + 1) x [r, r + 1); its centre is (c + 0.5, r + 0.5). A polygon covers a pixel
when it covers the pixel's centre.

:func:`mask_to_polygons` traces the exact pixel-edge ("crack") boundary of each part and
hole, so with ``tolerance=0`` and ``min_area=0`` it is lossless: :func:`polygons_to_mask`
gives back the same pixels. A positive tolerance simplifies the rings with
:func:`simplify_ring`, the one simplification rule of proposals, assists, brush results and
imports. Rasterisation goes through pycocotools, so a polygon fills exactly the pixels that
COCO tools (COCOeval, torchvision's CocoDetection) fill.

Compressed RLE strings are parsed and validated here before pycocotools sees them: its C
decoder trusts its input, and a malformed string from a foreign file would overrun memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from app.core.types import Polygon
from app.errors import MaskLoopError

DEFAULT_TOLERANCE = 0.5  # px, Douglas-Peucker epsilon
DEFAULT_MIN_AREA = 4.0  # px^2: smaller parts and holes are dropped as noise
# Vertices further out than this are refused: pycocotools scales them into C ints.
MAX_COORD = 1e7
_MAX_RLE_DIGITS = 13  # 13 x 5 bits covers any count of an image below 2**63 pixels


class GeometryError(MaskLoopError):
    """A mask, polygon or RLE that cannot be converted (malformed or out of range)."""


# -- masks -> polygons ----------------------------------------------------------------------


def _as_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise GeometryError(f"a mask must be a 2-D array (height, width), not shape {m.shape}")
    return np.ascontiguousarray((m != 0).view(np.uint8) if m.dtype != np.uint8 else m)


def _drop_redundant(ring: np.ndarray) -> np.ndarray:
    """Remove repeated vertices and vertices in the middle of a straight run."""
    keep = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    ring = ring[keep] if keep.any() else ring[:1]
    if len(ring) < 3:
        return ring
    prev = ring - np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0) - ring
    cross = prev[:, 0] * nxt[:, 1] - prev[:, 1] * nxt[:, 0]
    dot = prev[:, 0] * nxt[:, 0] + prev[:, 1] * nxt[:, 1]
    return ring[~((cross == 0) & (dot > 0))]


def _douglas_peucker(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices (ascending) of the vertices Douglas-Peucker keeps on a closed ring.

    cv2 chooses them and returns them in ring order, so they are found by position; on a
    ring that passes one point twice (two parts touching at a corner) by walking the ring
    from each place where the first kept vertex lies until every kept one is matched.
    """
    pts = ring if ring.dtype in (np.int32, np.float32) else ring.astype(np.float32)
    kept = cv2.approxPolyDP(pts.reshape(-1, 1, 2), float(tolerance), True).reshape(-1, 2)
    rows, wanted = pts.tolist(), kept.tolist()
    where = {tuple(p): i for i, p in enumerate(rows)}
    if len(where) == len(rows):
        return np.array(sorted(where[tuple(p)] for p in wanted), np.intp)
    n = len(rows)
    for start in (i for i, p in enumerate(rows) if p == wanted[0]):
        found: list[int] = []
        for step in range(n):
            i = (start + step) % n
            if len(found) < len(wanted) and rows[i] == wanted[len(found)]:
                found.append(i)
        if len(found) == len(wanted):
            return np.array(sorted(found), np.intp)
    return np.arange(n)  # not reached: cv2 keeps vertices of the ring, in its order


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """A closed ring with fewer vertices that stays within about ``tolerance`` px of it.

    Douglas-Peucker chooses the vertices; then every chord is moved parallel to itself until
    it cuts off as much area of the ring as it adds, and each vertex goes to where its two
    chords meet (at most ``tolerance`` away). Plain Douglas-Peucker keeps vertices on a
    pixel outline and puts each chord inside a convex curve, so small objects shrink: on
    real nuclei (median 208 px^2) at 1.4 px the median IoU with the mask is 0.946 plain and
    0.976 balanced, with the same vertex count. ``tolerance`` 0 keeps every vertex.
    """
    if tolerance <= 0 or len(ring) <= 3:
        return ring
    idx = _douglas_peucker(ring, tolerance)
    if len(idx) < 3:
        return ring
    p = ring.astype(np.float64)
    nxt = np.roll(p, -1, axis=0)
    # Twice the signed area swept from the origin, summed along the ring up to each vertex.
    swept = np.concatenate([[0.0], np.cumsum(p[:, 0] * nxt[:, 1] - nxt[:, 0] * p[:, 1])])
    start, end = idx, np.roll(idx, -1)
    along = np.where(end > start, swept[end] - swept[start], swept[-1] - swept[start] + swept[end])
    a, b = p[start], p[end]
    twice_area = along + b[:, 0] * a[:, 1] - a[:, 0] * b[:, 1]  # the span closed by its chord
    chord = b - a
    length = np.maximum(np.hypot(chord[:, 0], chord[:, 1]), 1e-9)
    normal = np.stack([-chord[:, 1], chord[:, 0]], axis=1) / length[:, None]  # left of a->b
    shift = -0.5 * twice_area / length
    # Vertex k is where chord k-1 (normal n1, shift d1) and chord k (n2, d2) meet once moved.
    n1, d1, n2, d2 = np.roll(normal, 1, axis=0), np.roll(shift, 1), normal, shift
    det = n1[:, 0] * n2[:, 1] - n1[:, 1] * n2[:, 0]
    crossing = np.abs(det) > 0.2  # chords near parallel: their mean shift instead
    safe = np.where(crossing, det, 1.0)
    move = np.where(
        crossing[:, None],
        np.stack([d1 * n2[:, 1] - d2 * n1[:, 1], n1[:, 0] * d2 - n2[:, 0] * d1], axis=1)
        / safe[:, None],
        0.5 * (d1[:, None] * n1 + d2[:, None] * n2),
    )
    size = np.hypot(move[:, 0], move[:, 1])
    move *= np.minimum(1.0, tolerance / np.maximum(size, 1e-9))[:, None]
    out = a + move
    if _signed_twice_area(out) * _signed_twice_area(a) <= 0:
        return a  # the balance turned the ring inside out: the plain choice of vertices
    return out


def mask_to_polygons(
    mask: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_area: float = DEFAULT_MIN_AREA,
    offset: tuple[float, float] = (0.0, 0.0),
    scale: int = 1,
) -> list[Polygon]:
    """The parts of a bool/uint8 (H, W) mask as polygons with holes, largest part first.

    Rings follow pixel edges (see the module docstring), simplified by ``tolerance`` pixels;
    parts and holes whose exact area is below ``min_area`` px^2 are dropped (holes filled).
    ``offset`` (x, y) is added to every vertex, so a mask cut from an ROI lands in image
    coordinates. A mask drawn at ``scale`` pixels per image pixel (a finer raster, as the
    brush paints) is traced there and shrunk back; ``tolerance``, ``min_area`` and
    ``offset`` stay in image pixels.
    """
    if scale < 1:
        raise GeometryError(f"a mask's scale must be a whole number >= 1, not {scale}")
    m = _as_mask(mask)
    h, w = m.shape
    if h == 0 or w == 0 or not m.any():
        return []
    # Upsampled 2x (and padded by one source pixel), every point of cv2's 8-connected
    # boundary maps to a pixel corner: even index 2c+2 -> left edge c, odd 2c+3 -> right
    # edge c+1. That gives exact crack boundaries for parts and holes alike.
    up = np.zeros((2 * h + 4, 2 * w + 4), np.uint8)
    for dy in (2, 3):
        for dx in (2, 3):
            up[dy : dy + 2 * h : 2, dx : dx + 2 * w : 2] = m
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]
    rings: list[tuple[np.ndarray, float]] = []
    for contour in contours:
        corners = _drop_redundant((contour.reshape(-1, 2) + 1) // 2 - 1)
        area = ring_area(corners)
        rings.append((corners.astype(np.int32), area))
    shift = np.array([offset[0], offset[1]], np.float64)
    fine_tolerance, fine_area = tolerance * scale, min_area * scale * scale

    def ring(corners: np.ndarray) -> np.ndarray:
        return (simplify_ring(corners, fine_tolerance) / scale + shift).astype(np.float32)

    parts: list[tuple[float, Polygon]] = []
    for i, (corners, area) in enumerate(rings):
        if links[i][3] != -1 or area <= 0 or area < fine_area:
            continue
        holes: list[tuple[float, np.ndarray]] = []
        child = links[i][2]
        while child != -1:
            hole, hole_area = rings[child]
            if hole_area > 0 and hole_area >= fine_area:
                holes.append((hole_area, hole))
            child = links[child][0]
        holes.sort(key=lambda t: -t[0])
        parts.append((area, Polygon(ring(corners), [ring(r) for _, r in holes])))
    parts.sort(key=lambda t: -t[0])
    return [p for _, p in parts]


def label_map_to_instances(
    labels: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_area: float = DEFAULT_MIN_AREA,
) -> dict[int, list[Polygon]]:
    """Polygons of every instance id (> 0) of a label map, in ascending id order.

    One pass finds every id's bounding box (a stable sort of the labelled pixels, then
    per-id min/max), then each id is contoured inside its own box only, so the cost follows
    the instances' sizes, not ids x image size; touching instances stay separate. Ids whose
    polygons all fall under ``min_area`` are left out.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise GeometryError(f"a label map must be a 2-D array, not shape {lab.shape}")
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all() or not np.all(np.mod(lab, 1) == 0):
            raise GeometryError("a label map must hold whole-number instance ids")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "iub":
        raise GeometryError(f"a label map must hold integer ids, not {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise GeometryError("a label map must not hold negative ids")
    w = lab.shape[1]
    flat = lab.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return {}
    ids = flat[where]
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    rows, cols = np.divmod(where[order], w)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size]
    # The stable sort keeps raster order inside one id: its first and last pixels give rows.
    y0s, y1s = rows[starts], rows[ends - 1] + 1
    x0s = np.minimum.reduceat(cols, starts)
    x1s = np.maximum.reduceat(cols, starts) + 1
    out: dict[int, list[Polygon]] = {}
    for k, s in enumerate(starts):
        y0, y1, x0, x1 = int(y0s[k]), int(y1s[k]), int(x0s[k]), int(x1s[k])
        crop = lab[y0:y1, x0:x1] == ids[s]
        polygons = mask_to_polygons(
            crop, tolerance=tolerance, min_area=min_area, offset=(float(x0), float(y0))
        )
        if polygons:
            out[int(ids[s])] = polygons
    return out


# -- polygons -> masks ----------------------------------------------------------------------


def _check_ring(ring: np.ndarray) -> None:
    if ring.size and (not np.isfinite(ring).all() or np.abs(ring).max() > MAX_COORD):
        raise GeometryError(f"polygon coordinates must be finite and within +-{MAX_COORD:g} px")


def polygons_to_mask_crop(
    polygons: Sequence[Polygon], height: int, width: int
) -> tuple[np.ndarray, int, int]:
    """Rasterise inside the polygons' bounding box only: (bool crop, x0, y0) in the image.

    The crop is clipped to the image; polygons entirely outside it give an empty crop.
    """
    for p in polygons:
        _check_ring(p.exterior)
        for hole in p.holes:
            _check_ring(hole)
    rings = [p.exterior for p in polygons if len(p.exterior) >= 3]
    if not rings:
        return np.zeros((0, 0), bool), 0, 0
    pts = np.concatenate(rings)
    x0 = min(max(math.floor(float(pts[:, 0].min())), 0), width)
    y0 = min(max(math.floor(float(pts[:, 1].min())), 0), height)
    x1 = min(max(math.ceil(float(pts[:, 0].max())), x0), width)
    y1 = min(max(math.ceil(float(pts[:, 1].max())), y0), height)
    ch, cw = y1 - y0, x1 - x0
    crop = np.zeros((ch, cw), bool)
    if ch == 0 or cw == 0:
        return crop, x0, y0
    shift = np.array([x0, y0], np.float64)
    for p in polygons:
        if len(p.exterior) < 3:
            continue
        ring_list = [p.exterior, *(hole for hole in p.holes if len(hole) >= 3)]
        # Shifting by whole pixels keeps pycocotools' 1/5-pixel rounding unchanged.
        coords = [(r.astype(np.float64) - shift).ravel().tolist() for r in ring_list]
        masks = mask_utils.decode(mask_utils.frPyObjects(coords, ch, cw)).astype(bool)
        part = masks[:, :, 0]
        if masks.shape[2] > 1:
            part &= ~masks[:, :, 1:].any(axis=2)
        crop |= part
    return crop, x0, y0


def polygons_to_mask(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """A bool (height, width) mask of the polygons: union of parts, holes cut out of their part."""
    out = np.zeros((height, width), bool)
    crop, x0, y0 = polygons_to_mask_crop(polygons, height, width)
    if crop.size:
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return out


def _signed_twice_area(ring: np.ndarray) -> float:
    if len(ring) < 3:
        return 0.0
    x = ring[:, 0].astype(np.float64)
    y = ring[:, 1].astype(np.float64)
    return float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]) + x[-1] * y[0] - y[-1] * x[0])


def ring_area(ring: np.ndarray) -> float:
    """Shoelace area of one closed ring (N, 2), in px^2."""
    return abs(_signed_twice_area(ring)) / 2.0


def polygons_bbox(polygons: Sequence[Polygon]) -> tuple[float, float, float, float]:
    """COCO box (x, y, w, h) around every exterior vertex; zeros for no polygons."""
    rings = [p.exterior for p in polygons if len(p.exterior)]
    if not rings:
        return (0.0, 0.0, 0.0, 0.0)
    pts = np.concatenate(rings)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


# -- RLE ------------------------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a mask: {"size": [h, w], "counts": str} (JSON-ready)."""
    m = _as_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(m != 0, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def _counts_from_string(s: str) -> np.ndarray:
    """Decode pycocotools' compressed counts (6-bit chars, 5 data bits, delta-coded)."""
    try:
        raw = np.frombuffer(s.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError as exc:
        raise GeometryError("RLE counts hold characters outside the COCO alphabet") from exc
    if raw.size == 0:
        return np.zeros(0, np.int64)
    if raw.min() < 0 or raw.max() > 63:
        raise GeometryError("RLE counts hold characters outside the COCO alphabet")
    more = (raw & 0x20) != 0
    if more[-1]:
        raise GeometryError("RLE counts end in the middle of a number")
    last = np.flatnonzero(~more)
    first = np.r_[0, last[:-1] + 1]
    digits = np.arange(raw.size) - np.repeat(first, last - first + 1)
    if digits.max() >= _MAX_RLE_DIGITS:
        raise GeometryError("RLE counts hold a number too large for any image")
    values = np.add.reduceat((raw & 0x1F) << (5 * digits), first)
    negative = (raw[last] & 0x10) != 0
    values = values - np.where(negative, np.left_shift(1, 5 * (digits[last] + 1)), 0)
    # pycocotools adds the count two places back to every count from the fourth on.
    counts = values.copy()
    if counts.size > 3:
        counts[3::2] = np.cumsum(values[3::2]) + values[1]
    if counts.size > 4:
        counts[4::2] = np.cumsum(values[4::2]) + values[2]
    return counts


def _rle_size(rle: dict, height: int | None, width: int | None) -> tuple[int, int]:
    size = rle.get("size")
    if size is None:
        if height is None or width is None:
            raise GeometryError("an RLE needs a 'size' of [height, width]")
        return int(height), int(width)
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise GeometryError("an RLE 'size' must be [height, width] in whole pixels")
    h, w = int(size[0]), int(size[1])
    if (height is not None and h != height) or (width is not None and w != width):
        raise GeometryError(f"the RLE is {w}x{h} px but its image is {width}x{height} px")
    return h, w


def rle_counts(rle: dict, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Validated run lengths (background first, column-major) of a compressed or list RLE."""
    if not isinstance(rle, dict) or "counts" not in rle:
        raise GeometryError("an RLE must be an object with 'counts' and 'size'")
    h, w = _rle_size(rle, height, width)
    raw = rle["counts"]
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise GeometryError("RLE counts hold characters outside the COCO alphabet") from exc
    if isinstance(raw, str):
        counts = _counts_from_string(raw)
    elif isinstance(raw, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise GeometryError("uncompressed RLE counts must be whole numbers")
        if any(v < 0 or v > h * w for v in raw):
            raise GeometryError("RLE counts must be between 0 and the image's pixel count")
        counts = np.asarray(raw, dtype=np.int64) if raw else np.zeros(0, np.int64)
    else:
        raise GeometryError("RLE counts must be a string or a list of numbers")
    if counts.size and counts.min() < 0:
        raise GeometryError("RLE counts must not be negative")
    if int(counts.sum()) != h * w:
        raise GeometryError(f"RLE counts cover {int(counts.sum())} pixels, not {h}x{w} = {h * w}")
    return counts


def rle_to_mask_crop(
    rle: dict, height: int | None = None, width: int | None = None
) -> tuple[np.ndarray, int, int]:
    """The foreground of an RLE inside its bounding box: (bool crop, x0, y0).

    Decodes only the columns the foreground spans, at about 3 bytes per pixel of them:
    memory is bounded by the image's size (checked against the pixel limit by callers),
    never by the numbers an RLE claims, and a small object on a big image stays cheap.
    """
    counts = rle_counts(rle, height, width)
    h, _ = _rle_size(rle, height, width)
    ends = np.cumsum(counts)
    fg_starts, fg_ends = (ends - counts)[1::2], ends[1::2]
    keep = fg_ends > fg_starts
    fg_starts, fg_ends = fg_starts[keep], fg_ends[keep]
    if fg_starts.size == 0:
        return np.zeros((0, 0), bool), 0, 0
    col0, col1 = int(fg_starts[0]) // h, (int(fg_ends[-1]) - 1) // h
    base = col0 * h
    edges = np.zeros((col1 - col0 + 1) * h + 1, np.int8)
    np.add.at(edges, fg_starts - base, 1)
    np.subtract.at(edges, fg_ends - base, 1)
    columns = np.cumsum(edges[:-1], dtype=np.int8).view(bool).reshape(-1, h).T
    del edges
    rows = np.flatnonzero(columns.any(axis=1))
    y0, y1 = int(rows[0]), int(rows[-1])
    cols = np.flatnonzero(columns.any(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1])
    return np.ascontiguousarray(columns[y0 : y1 + 1, c0 : c1 + 1]), col0 + c0, y0


def rle_decode(rle: dict, height: int | None = None, width: int | None = None) -> np.ndarray:
    """A bool (h, w) mask from a compressed (str counts) or uncompressed (list counts) RLE.

    ``height``/``width`` fill in a missing ``size`` and must agree with a present one.
    Raises :class:`GeometryError` for malformed input.
    """
    if not isinstance(rle, dict):
        raise GeometryError("an RLE must be an object with 'counts' and 'size'")
    h, w = _rle_size(rle, height, width)
    crop, x0, y0 = rle_to_mask_crop(rle, height, width)
    out = np.zeros((h, w), bool)
    if crop.size:
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return out


def crop_to_rle(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """Compressed RLE of a (height, width) image that is empty outside ``crop`` placed at (x0, y0).

    Works in the crop only (no full-size image), which keeps RLE export fast on big images.
    """
    height, width = int(height), int(width)
    c = np.asarray(crop, bool)
    if not c.any():
        counts = [height * width]
    else:
        padded = np.zeros((c.shape[0] + 2, c.shape[1]), np.int8)
        padded[1:-1] = c
        step = np.diff(padded, axis=0).T  # +1 where a run starts, -1 one past where it ends
        sc, sr = np.nonzero(step == 1)
        ec, er = np.nonzero(step == -1)
        starts = (x0 + sc) * height + y0 + sr
        stops = (x0 + ec) * height + y0 + er
        # Runs that meet across a column boundary are one run in column-major order.
        joined = stops[:-1] == starts[1:]
        starts = starts[np.r_[True, ~joined]]
        stops = stops[np.r_[~joined, True]]
        bounds = np.empty(2 * len(starts) + 2, np.int64)
        bounds[0] = 0
        bounds[1:-1:2] = starts
        bounds[2:-1:2] = stops
        bounds[-1] = height * width
        counts = np.diff(bounds).tolist()
        if counts[-1] == 0:  # pycocotools writes no empty trailing run
            counts.pop()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode()}


def polygons_to_rle(polygons: Sequence[Polygon], height: int, width: int) -> dict:
    """Compressed COCO RLE of the polygons' mask (holes honoured), JSON-ready."""
    crop, x0, y0 = polygons_to_mask_crop(polygons, height, width)
    return crop_to_rle(crop, x0, y0, height, width)
