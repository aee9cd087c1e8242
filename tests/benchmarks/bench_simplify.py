"""Simplification benchmarks: what the simplify tolerance costs in overlap and saves in
vertices, and what a brush stroke leaves of a smooth outline.

Cases (one JSON line each):
  simplify_nuclei  every nucleus of the real DSB2018 validation split
                   (``../shared/data/dsb2018/val.txt``; skipped when the folder is not there)
                   traced at each tolerance: median and 10th-percentile mask IoU of the
                   outline with its nucleus, and median vertices; ``plain_*`` the same for
                   plain Douglas-Peucker (cv2.approxPolyDP on the pixel outline, as labelme
                   and CVAT simplify), the baseline of ``simplify_ring``'s area balance.
  simplify_brush   a stroke of radius 4 px on a 200-vertex circle of radius 40 px at each
                   tolerance: vertices left and the largest distance of the outline from the
                   circle away from the stroke, against the pixel outline's vertex count;
                   and the brush's time on a 360x360 px instance (a 4x finer raster).

Run ``.venv/bin/python tests/benchmarks/bench_simplify.py``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import emit, timeit  # noqa: E402

from app.core.document import brush_polygons  # noqa: E402
from app.core.geometry import mask_to_polygons, polygons_to_mask  # noqa: E402
from app.core.types import Polygon  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018"
TOLERANCES = (0.5, 1.0, 1.4, 2.0)


def _nuclei(folder: Path) -> list[np.ndarray]:
    """Each validation nucleus as a mask cropped to its box with a 2 px border."""
    out = []
    for name in (line.strip() for line in (folder / "val.txt").read_text().splitlines()):
        if not name:
            continue
        labels = cv2.imread(str(folder / "labels" / Path(name).name), cv2.IMREAD_UNCHANGED)
        for i in np.unique(labels)[1:]:
            ys, xs = np.nonzero(labels == i)
            crop = labels[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] == i
            out.append(np.pad(crop, 2))
    return out


def _iou(polygons: list[Polygon], mask: np.ndarray) -> float:
    drawn = polygons_to_mask(polygons, *mask.shape)
    return float((drawn & mask).sum() / (drawn | mask).sum())


def bench_nuclei() -> None:
    if not (DATA / "val.txt").exists():
        print(f"simplify_nuclei skipped: no {DATA}", file=sys.stderr)
        return
    nuclei = _nuclei(DATA)
    for tolerance in TOLERANCES:
        ious, vertices, plain_ious, plain_vertices = [], [], [], []
        for mask in nuclei:
            polygons = mask_to_polygons(mask, tolerance=tolerance)
            if not polygons:
                continue
            ious.append(_iou(polygons, mask))
            vertices.append(sum(len(p.exterior) for p in polygons))
            plain = []
            for p in mask_to_polygons(mask, tolerance=0):
                ring = cv2.approxPolyDP(p.exterior.reshape(-1, 1, 2), tolerance, True)
                plain.append(Polygon(ring.reshape(-1, 2)))
            plain_ious.append(_iou(plain, mask))
            plain_vertices.append(sum(len(p.exterior) for p in plain))
        emit(
            "simplify_nuclei",
            ious,
            unit="IoU",
            higher_is_better=True,
            baseline=plain_ious,
            baseline_name="plain Douglas-Peucker (cv2.approxPolyDP)",
            target="median IoU >= 0.97 at 1.4 px",
            tolerance=tolerance,
            nuclei=len(ious),
            median_area=float(statistics.median(int(m.sum()) for m in nuclei)),
            iou_p10=float(np.percentile(ious, 10)),
            vertices_median=float(statistics.median(vertices)),
            plain_iou_p10=float(np.percentile(plain_ious, 10)),
            plain_vertices_median=float(statistics.median(plain_vertices)),
        )


def bench_brush() -> None:
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = Polygon(100 + 40 * np.c_[np.cos(t), np.sin(t)])
    stroke = np.array([[140.0, 100.0], [142.0, 104.0]])
    (pixels,) = mask_to_polygons(polygons_to_mask([circle], 200, 200), tolerance=0)
    big = Polygon(600 + 170 * np.c_[np.cos(t), np.sin(t)])
    for tolerance in (0.0, *TOLERANCES):
        (out,) = brush_polygons(
            [circle], stroke, 4, erase=False, image_size=(200, 200), tolerance=tolerance
        )
        ring = out.exterior.astype(np.float64)
        s = np.linspace(0, 1, 20)[:, None, None]
        samples = (ring[None] * (1 - s) + np.roll(ring, -1, axis=0)[None] * s).reshape(-1, 2)
        away = samples[np.linalg.norm(samples - stroke[0], axis=1) > 12]
        deviation = float(np.abs(np.linalg.norm(away - 100, axis=1) - 40).max())
        times = timeit(
            lambda tol=tolerance: brush_polygons(
                [big], np.array([[770.0, 600.0]]), 8, erase=False, image_size=(1300, 1300),
                tolerance=tol,
            ),
            repeat=10,
        )  # fmt: skip
        emit(
            "simplify_brush",
            times,
            target="untouched arc within tolerance + 0.5 px, far fewer vertices than pixels",
            tolerance=tolerance,
            vertices=len(ring),
            pixel_outline_vertices=len(pixels.exterior),
            max_deviation_px=round(deviation, 3),
            timed="brush on a 360x360 px instance",
        )


if __name__ == "__main__":
    bench_nuclei()
    bench_brush()
