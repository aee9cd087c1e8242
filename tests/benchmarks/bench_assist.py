"""Assist latency (issue 19): box -> mask and click -> instance on cached features.

Cases (one JSON line each, see DESIGN.md), the bundled cells-mobile model on a 1024x1024
16-bit synthetic nuclei image (tiled by the predictor into 512 px tiles at native scale):
  assist_box    one ``Assistant.box_to_mask`` per ground-truth box of the image, with the
                image's features cached (``prepare``, as after the proposal pass); baseline:
                ``Predictor.predict`` on the whole image again, the cost of answering an
                assist by re-running the model. Also: ``cold_median_s`` (an assist whose
                window is not cached: one tile's backbone, then the heads), ``prepare_s``
                (every window of the image), and ``iou_median`` (mask IoU of each result with
                its ground-truth object, exact boxes, synthetic data: a sanity check, not
                the real-data figure issue 19 asks for with jittered boxes).
  assist_click  one ``Assistant.click`` at the pixel nearest each object's centroid, with
                features and every window's floor detections cached; ``first_click_s``: the
                first click in a window (its RPN and box head run once, at the score floor);
                ``found_share``: clicks whose result matches the object (mask IoU >= 0.5).

Nothing downloads; run ``.venv/bin/python tests/benchmarks/bench_assist.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _bench import emit, timeit  # noqa: E402

from app.core.geometry import polygons_to_mask  # noqa: E402
from app.ml import zoo  # noqa: E402
from app.ml.assist import Assistant, NoObjectFound  # noqa: E402
from app.ml.predictor import Predictor  # noqa: E402
from app.ml.synthetic import generate_sample  # noqa: E402

BUNDLED = "cells-mobile"
SIZE = 1024
TARGET = "p95 < 0.1 s on a 2-core CPU, ratio >= 10 (vs re-running the Predictor)"


def _objects(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Each object's box (x0, y0, x1, y1; last pixel + 1), mask, and a pixel inside it."""
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    order = np.argsort(ids, kind="stable")
    ys, xs, ids = ys[order], xs[order], ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    boxes, masks, inside = [], [], []
    for lo, hi in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
        oy, ox = ys[lo:hi], xs[lo:hi]
        boxes.append([ox.min(), oy.min(), ox.max() + 1, oy.max() + 1])
        masks.append(labels == ids[lo])
        # The object's pixel nearest its centroid (the centroid may fall outside it).
        k = int(np.argmin((ox - ox.mean()) ** 2 + (oy - oy.mean()) ** 2))
        inside.append([ox[k] + 0.5, oy[k] + 0.5])
    return np.asarray(boxes, np.float64), masks, np.asarray(inside)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer boxes and repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    card = zoo.get_card(BUNDLED)
    predictor = Predictor(card, device="cpu")
    sample = generate_sample(11, size=(SIZE, SIZE), bit_depth=16, n_cells=350, cell_radius=(10, 14))
    image = sample.image
    boxes, masks, inside = _objects(sample.labels)
    count = 20 if args.quick else 80
    pick = np.random.default_rng(0).permutation(len(boxes))[:count]

    full = timeit(lambda: predictor.predict(image), repeat=1 if args.quick else 3)

    assistant = Assistant(predictor)
    t0 = time.perf_counter()
    assistant.prepare(image, image_key="bench")
    prepare_s = time.perf_counter() - t0
    windows, cache_mb = len(assistant.cache), assistant.cache.nbytes / 2**20
    box_times, ious = [], []
    for i in [*pick[:2], *pick]:  # the first two warm up
        t0 = time.perf_counter()
        try:
            inst = assistant.box_to_mask(image, tuple(boxes[i]), image_key="bench")
        except NoObjectFound:
            inst = None
        box_times.append(time.perf_counter() - t0)
        mask = polygons_to_mask(inst.polygons, SIZE, SIZE) if inst else np.zeros_like(masks[i])
        ious.append(_iou(mask, masks[i]))
    box_times, ious = box_times[2:], ious[2:]

    cold = []
    for k in range(1 if args.quick else 3):
        fresh = Assistant(predictor)
        cold += timeit(
            lambda f=fresh, k=k: f.box_to_mask(image, tuple(boxes[pick[k]]), image_key="cold"),
            repeat=1,
            warmup=0,
        )
    emit(
        "assist_box",
        box_times,
        baseline=full,
        baseline_name="Predictor.predict on the whole image again",
        target=TARGET,
        subject=f"{BUNDLED} on {predictor.device_name}",
        image=f"{SIZE}x{SIZE} 16-bit, {len(boxes)} nuclei",
        boxes=len(box_times),
        windows=windows,
        cache_mb=round(cache_mb, 1),
        prepare_s=round(prepare_s, 3),
        cold_median_s=round(statistics.median(cold), 4),
        iou_median=round(float(np.median(ious)), 4),
        threads=torch.get_num_threads(),
    )

    clicker = Assistant(predictor)
    clicker.prepare(image, image_key="bench")
    for i in pick:  # untimed: every window's floor detections get computed
        try:
            clicker.click(image, tuple(inside[i]), image_key="bench")
        except NoObjectFound:
            pass
    first: list[float] = []
    click_times, hits = [], 0
    for i in pick:
        t0 = time.perf_counter()
        try:
            inst = clicker.click(image, tuple(inside[i]), image_key="bench")
        except NoObjectFound:
            inst = None
        click_times.append(time.perf_counter() - t0)
        found = polygons_to_mask(inst.polygons, SIZE, SIZE) if inst else None
        hits += found is not None and _iou(found, masks[i]) >= 0.5
    # The first click in a window pays for its floor detections (features already cached).
    for i in pick[: 1 if args.quick else 3]:
        probe = Assistant(predictor)
        probe.prepare(image, image_key="probe")
        first += timeit(
            lambda p=probe, i=i: p.click(image, tuple(inside[i]), image_key="probe"),
            repeat=1,
            warmup=0,
        )
    emit(
        "assist_click",
        click_times,
        baseline=full,
        baseline_name="Predictor.predict on the whole image again",
        target=TARGET,
        subject=f"{BUNDLED} on {predictor.device_name}",
        image=f"{SIZE}x{SIZE} 16-bit, {len(boxes)} nuclei",
        clicks=len(click_times),
        found_share=round(hits / len(click_times), 3),
        first_click_s=round(statistics.median(first), 4),
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
