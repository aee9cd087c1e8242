"""Assist latency: box -> mask and click -> instance on cached features.

Cases (one JSON line each, ``_bench.emit``), the bundled cells-mobile model on a 1024x1024
16-bit synthetic nuclei image (tiled by the predictor into 512 px tiles at native scale):
  assist_box    one ``Assistant.box_to_mask`` per ground-truth box of the image, with the
                image's features cached (``prepare``, as after the proposal pass); baseline:
                ``Predictor.predict`` on the whole image again, the cost of answering an
                assist by re-running the model. Also: ``cold_median_s`` (an assist whose
                window is not cached: one tile's backbone, then the heads),
                ``after_proposal_first_s`` (the first assist after a proposal pass that kept
                its features, ``Assistant.keeping_features``, as the GUI's worker does for
                the image shown), ``prepare_s``
                (every window of the image), and ``iou_median`` (mask IoU of each result with
                its ground-truth object, exact boxes, synthetic data: a sanity check, not
                the real-data figure, which uses jittered boxes).
  assist_click  one ``Assistant.click`` at the pixel nearest each object's centroid, with
                features and every window's floor detections cached; ``first_click_s``: the
                first click in a window (its RPN and box head run once, at the score floor);
                ``found_share``: clicks whose result matches the object (mask IoU >= 0.5).
  assist_box_iou  quality, not time: mask IoU of ``box_masks`` with each nucleus of the
                real DSB2018 validation split (``../shared/data/dsb2018/val.txt``) from its
                ground-truth box, exact and jittered (each side moved by up to 15 % of the
                box's width or height, uniform, seeded): the mask head on loose, drag-like
                boxes (target: jittered median >= 0.85). Skipped
                when the data set is not there.

Nothing downloads; run ``.venv/bin/python tests/benchmarks/bench_assist.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _bench import emit, env_info, timeit  # noqa: E402

from app.core.geometry import polygons_to_mask_crop  # noqa: E402
from app.core.images import read_image  # noqa: E402
from app.core.label_maps import read_label_map  # noqa: E402
from app.core.types import Instance  # noqa: E402
from app.demo.synthetic import generate_sample  # noqa: E402
from app.ml import zoo  # noqa: E402
from app.ml.assist import Assistant, NoObjectFound  # noqa: E402
from app.ml.models import PROMPT_BOX_JITTER  # noqa: E402
from app.ml.predictor import Predictor, RawDetections, masks_in_boxes  # noqa: E402
from app.ml.tiling import MaskCrop  # noqa: E402

BUNDLED = "cells-mobile"
SIZE = 1024
JITTER = PROMPT_BOX_JITTER
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018"
TARGET = "p95 < 0.1 s on a 2-core CPU, ratio >= 10 (vs re-running the Predictor)"


def _objects(labels: np.ndarray) -> tuple[np.ndarray, list[MaskCrop], np.ndarray]:
    """Each object's box (x0, y0, x1, y1; last pixel + 1), mask over its box, and the
    centre of its pixel nearest its centroid (the centroid may fall outside it)."""
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    order = np.argsort(ids, kind="stable")
    ys, xs, ids = ys[order], xs[order], ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    boxes, crops, inside = [], [], []
    for lo, hi in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
        oy, ox = ys[lo:hi], xs[lo:hi]
        x0, y0 = int(ox.min()), int(oy.min())
        mask = np.zeros((int(oy.max()) + 1 - y0, int(ox.max()) + 1 - x0), bool)
        mask[oy - y0, ox - x0] = True
        boxes.append([x0, y0, x0 + mask.shape[1], y0 + mask.shape[0]])
        crops.append(MaskCrop(x0, y0, mask, 1.0, 1))
        k = int(np.argmin((ox - ox.mean()) ** 2 + (oy - oy.mean()) ** 2))
        inside.append([ox[k] + 0.5, oy[k] + 0.5])
    return np.asarray(boxes, np.float64), crops, np.asarray(inside)


def _crop_iou(a: MaskCrop, b: MaskCrop) -> float:
    x0, y0, x1, y1 = min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1)
    return _iou(a.window(x0, y0, x1, y1), b.window(x0, y0, x1, y1))


def bench_real_iou(predictor: Predictor, data: Path, quick: bool) -> None:
    names = (data / "val.txt").read_text().split()
    if quick:
        names = names[:8]
    rng = np.random.default_rng(0)
    assistant = Assistant(predictor)
    exact_ious: list[float] = []
    loose_ious: list[float] = []
    areas: list[int] = []  # each nucleus's pixels
    loose_areas: list[int] = []  # each jittered-box mask's pixels
    for name in names:
        image = read_image(data / "images" / name)
        labels = read_label_map(data / "labels" / name)
        boxes, truth, _ = _objects(labels)
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        loose = boxes + rng.uniform(-JITTER, JITTER, boxes.shape) * size
        h, w = labels.shape
        areas.extend(int(t.mask.sum()) for t in truth)
        for given, out in ((boxes, exact_ious), (loose, loose_ious)):
            raw = assistant.box_masks(image, given, image_key=name)
            for k in range(len(given)):
                one = RawDetections(
                    raw.boxes[k : k + 1],
                    raw.scores[k : k + 1],
                    raw.labels[k : k + 1],
                    raw.masks[k : k + 1],
                )
                crops = masks_in_boxes(one, h, w)
                out.append(_crop_iou(crops[0], truth[k]) if crops else 0.0)
                if out is loose_ious:
                    loose_areas.append(int(crops[0].mask.sum()) if crops else 0)
        assistant.forget(name)
    exact, loose = np.asarray(exact_ious), np.asarray(loose_ious)
    print(
        json.dumps(
            {
                "benchmark": "assist_box_iou",
                "unit": "mask IoU",
                "ours": {"median": round(float(np.median(loose)), 4), "n": len(loose)},
                "exact_box_median": round(float(np.median(exact)), 4),
                "exact_share_iou_85": round(float(np.mean(exact >= 0.85)), 3),
                "jittered_share_iou_85": round(float(np.mean(loose >= 0.85)), 3),
                "jitter": JITTER,
                "by_area": _by_area(
                    np.asarray(areas), loose, np.asarray(loose_areas) / np.asarray(areas)
                ),
                "target": "jittered median >= 0.85",
                "subject": f"{BUNDLED} ({predictor.card.weights.sha256[:12]})",
                "data": f"DSB2018 val split, {len(names)} images",
                "env": env_info(),
            }
        ),
        flush=True,
    )


AREA_BINS = (0, 100, 200, 400)  # nucleus pixels: where small objects stop fitting


def _by_area(areas: np.ndarray, ious: np.ndarray, ratios: np.ndarray) -> dict[str, dict]:
    """Jittered-box figures per nucleus size (image pixels): small nuclei miss IoU 0.85 on a
    boundary pixel, and that is where masks come out too large."""
    out = {}
    for lo, hi in zip(AREA_BINS, (*AREA_BINS[1:], None), strict=True):
        pick = (areas >= lo) & (areas < hi) if hi is not None else areas >= lo
        if pick.any():
            out[f"{lo}-{hi}" if hi is not None else f">={lo}"] = {
                "n": int(pick.sum()),
                "median_iou": round(float(np.median(ious[pick])), 3),
                "share_iou_85": round(float(np.mean(ious[pick] >= 0.85)), 3),
                "median_area_ratio": round(float(np.median(ratios[pick])), 3),
            }
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _instance_iou(inst: Instance | None, truth: MaskCrop, h: int, w: int) -> float:
    if inst is None:
        return 0.0
    mask, x0, y0 = polygons_to_mask_crop(inst.polygons, h, w)
    return _crop_iou(MaskCrop(x0, y0, mask, 1.0, 1), truth)


def bench_latency(predictor: Predictor, quick: bool) -> None:
    sample = generate_sample(11, size=(SIZE, SIZE), bit_depth=16, n_cells=350, cell_radius=(10, 14))
    image = sample.image
    boxes, truth, inside = _objects(sample.labels)
    count = 20 if quick else 80
    pick = np.random.default_rng(0).permutation(len(boxes))[:count]

    full = timeit(lambda: predictor.predict(image), repeat=1 if quick else 3)

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
        ious.append(_instance_iou(inst, truth[i], SIZE, SIZE))
    box_times, ious = box_times[2:], ious[2:]

    cold = []
    for k in range(1 if quick else 3):
        fresh = Assistant(predictor)
        cold += timeit(
            lambda f=fresh, k=k: f.box_to_mask(image, tuple(boxes[pick[k]]), image_key="cold"),
            repeat=1,
            warmup=0,
        )
    after_proposal = []
    for k in range(1 if quick else 3):
        kept = Assistant(predictor)
        with kept.keeping_features("proposed"):
            predictor.predict(image)  # the proposal pass (not timed)
        after_proposal += timeit(
            lambda a=kept, k=k: a.box_to_mask(image, tuple(boxes[pick[k]]), image_key="proposed"),
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
        after_proposal_first_s=round(statistics.median(after_proposal), 4),
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
        hits += _instance_iou(inst, truth[i], SIZE, SIZE) >= 0.5
    # The first click in a window pays for its floor detections (features already cached).
    for i in pick[: 1 if quick else 3]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer boxes, images and repeats")
    parser.add_argument("--case", choices=["latency", "iou"], action="append")
    parser.add_argument("--data", type=Path, default=DATA, help="the DSB2018 folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor(zoo.get_card(BUNDLED), device="cpu")
    cases = args.case or ["latency", "iou"]
    if "latency" in cases:
        bench_latency(predictor, args.quick)
    if "iou" in cases:
        if (args.data / "val.txt").is_file():
            bench_real_iou(predictor, args.data, args.quick)
        else:
            print(f"assist_box_iou skipped: no {args.data / 'val.txt'}", file=sys.stderr)


if __name__ == "__main__":
    main()
