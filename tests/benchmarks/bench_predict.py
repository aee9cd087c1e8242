"""Prediction benchmarks: our Predictor vs torchvision's stock path, same weights.

Cases (one JSON line each, ``_bench.emit``):
  predict_cpu      the bundled cells-mobile model (trained weights) on an 800x1066 16-bit
                   image of ~300 nuclei (>= 100 detections at score 0.5), image in, polygons
                   out, at the input's own scale (no resize, no tiling, for both); baseline:
                   model(x), full-image mask paste, cv2.findContours on each full-size mask.
                   ``iou_min``: worst per-instance mask IoU between the two outputs
                   (instances matched by label and score). The ``bf16_*`` fields time the same
                   predictor with ``precision="bf16"`` (only the convolutions in bf16) and
                   match its instances to the stock ones by best mask IoU.
  predict_cpu_resnet50  the same comparison for a ResNet-50 FPN with random weights and 100
                   forced detections (score threshold 0): a heavier forward pass, so a
                   smaller share of the work is the postprocessing we avoid. Random-weight
                   scores are near-ties, so this case cannot judge reduced precision.
  predict_tiled    a 6000x6000 image (2000x2000 with --quick), light model: tiled predict
                   vs the untiled stock attempt, each in a subprocess under the same
                   address-space cap; peak RSS and time, and whether the attempt failed.
  predict_cuda_b1/_b8  only with CUDA: images/s of stock fp32 batch-1 vs ours (autocast).

Nothing downloads; run ``.venv/bin/python tests/benchmarks/bench_predict.py [--threads 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _bench import emit, timeit  # noqa: E402

from app.core.geometry import polygons_to_mask  # noqa: E402
from app.demo.synthetic import generate_sample  # noqa: E402
from app.ml import zoo  # noqa: E402
from app.ml.models import build_model  # noqa: E402
from app.ml.predictor import Predictor  # noqa: E402
from app.ml.preprocess import to_model_input  # noqa: E402
from app.ml.zoo import ModelCard, load_model  # noqa: E402

MEMORY_CAP = 8 << 30  # address space for each tiled/untiled child process
MASK_BIAS = 2.0
CPU_MASK_BIAS = 1.0
BUNDLED = "cells-mobile"
CELLS_THRESHOLD = 0.5


def _card(arch: str, n_classes: int, min_size: int = 800, max_size: int = 1333) -> ModelCard:
    return ModelCard.from_dict(
        {
            "id": "bench",
            "title": "random weights",
            "architecture": arch,
            "categories": [{"id": k, "name": f"c{k}"} for k in range(1, n_classes)],
            "input": {"min_size": min_size, "max_size": max_size},
            "weights": {"file": "none.pt"},
        }
    )


def _model(arch: str, n_classes: int, detections: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=n_classes, detections_per_img=detections)
    model.roi_heads.score_thresh = 0.0
    return model.eval()


def _image(h: int, w: int, blobs: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 120, (h, w, 3), dtype=np.uint8), (9, 9), 0)
    for _ in range(blobs):
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, center, int(rng.integers(8, 40)), (230, 200, 210), -1)
    return img


def stock_predict(model: torch.nn.Module, image: np.ndarray, card: ModelCard) -> list[dict]:
    """torchvision's usual path: model(x), full-image masks, contours of each full mask."""
    with torch.inference_mode():
        out = model([to_model_input(image, card.input)])[0]
    masks = (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
    results = []
    for mask, score, label in zip(
        masks, out["scores"].tolist(), out["labels"].tolist(), strict=True
    ):
        contours, _ = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        results.append(
            {"score": score, "label": label, "mask": mask.astype(bool), "contours": contours}
        )
    return results


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def equivalence(ours: list, stock: list[dict], card: ModelCard, h: int, w: int) -> dict:
    """Worst mask IoU over stock detections matched to ours by label and score.

    Masks under 16 pixels are left out (counted in ``tiny_skipped``): with random weights
    they are speckle. Ours runs with lossless polygons (tolerance 0, no minimum area) so the
    check measures the mask pipeline, not the simplification the user chooses.
    """
    ious, unmatched, tiny = [], 0, 0
    for ref in stock:
        if np.count_nonzero(ref["mask"]) < 16:
            tiny += 1
            continue
        category = card.category_for_label(ref["label"]).id
        cands = [
            i for i in ours if i.category_id == category and abs(i.score - ref["score"]) < 1e-4
        ]
        if not cands:
            unmatched += 1
            continue
        ious.append(max(_iou(polygons_to_mask(i.polygons, h, w), ref["mask"]) for i in cands))
    return {
        "iou_min": round(min(ious), 4) if ious else None,
        "iou_median": round(float(np.median(ious)), 4) if ious else None,
        "matched": len(ious),
        "unmatched": unmatched,
        "tiny_skipped": tiny,
    }


def _best_ious(ours: list, stock: list[dict], card: ModelCard, h: int, w: int) -> np.ndarray:
    """For each stock instance of >= 16 pixels, the best mask IoU among ours of its category."""
    masks = [(i.category_id, polygons_to_mask(i.polygons, h, w)) for i in ours]
    out = []
    for ref in stock:
        if np.count_nonzero(ref["mask"]) < 16:
            continue
        category = card.category_for_label(ref["label"]).id
        out.append(max([_iou(m, ref["mask"]) for c, m in masks if c == category] or [0.0]))
    return np.asarray(out)


def _compare(
    name: str,
    model: torch.nn.Module,
    card: ModelCard,
    image: np.ndarray,
    repeat: int,
    options: dict,
    **fields: object,
) -> None:
    """Time our predictor (fp32 and bf16) against the stock path, interleaved, and emit."""
    h, w = image.shape[:2]
    exact = Predictor.from_model(model, card, device="cpu", precision="fp32", **options)
    fast = Predictor.from_model(model, card, device="cpu", precision="bf16", **options)
    ours_t: list[float] = []
    base_t: list[float] = []
    bf16_t: list[float] = []
    for _ in range(repeat):  # interleaved, so load changes on a shared machine hit all three
        ours_t += timeit(lambda: exact.predict(image), repeat=1, warmup=0 if ours_t else 1)
        base_t += timeit(
            lambda: stock_predict(model, image, card), repeat=1, warmup=0 if base_t else 1
        )
        bf16_t += timeit(lambda: fast.predict(image), repeat=1, warmup=0 if bf16_t else 1)
    ours = exact.predict(image)
    stock = stock_predict(model, image, card)
    bf16_ious = _best_ious(fast.predict(image), stock, card, h, w)
    bf16_median = statistics.median(bf16_t)
    emit(
        name,
        ours_t,
        baseline=base_t,
        baseline_name="torchvision model(x) + full-image paste + cv2.findContours",
        target="ratio >= 2.0, iou_min >= 0.98",
        detections=len(stock),
        instances=len(ours),
        image=f"{h}x{w}",
        threads=torch.get_num_threads(),
        **fields,
        **equivalence(ours, stock, card, h, w),
        bf16_median_s=round(bf16_median, 4),
        bf16_ratio=round(statistics.median(base_t) / bf16_median, 3),
        bf16_iou_median=round(float(np.median(bf16_ious)), 4) if bf16_ious.size else None,
        bf16_share_iou_98=round(float(np.mean(bf16_ious >= 0.98)), 3) if bf16_ious.size else None,
        bf16_unmatched=int(np.sum(bf16_ious < 0.5)),
    )


def bench_cpu(quick: bool) -> None:
    """The bundled model at the input's scale, on a crowded nuclei image."""
    card = zoo.get_card(BUNDLED)
    card = dataclasses.replace(
        card, input=dataclasses.replace(card.input, min_size=800, max_size=1333)
    )
    model = load_model(card, device="cpu").eval()
    heads = model.roi_heads
    heads.score_thresh, heads.nms_thresh = CELLS_THRESHOLD, card.nms_iou or 0.5
    heads.detections_per_img = card.detections_per_img
    sample = generate_sample(11, size=(800, 1066), bit_depth=16, n_cells=300, cell_radius=(10, 14))
    options = dict(
        score_threshold=CELLS_THRESHOLD,
        max_detections=card.detections_per_img,
        polygon_tolerance=0.0,
        min_area=0.0,
    )
    _compare(
        "predict_cpu",
        model,
        card,
        sample.image,
        1 if quick else 3,
        options,
        subject=f"{BUNDLED} (trained), input at native scale",
    )


def bench_cpu_resnet50(quick: bool) -> None:
    arch, n_classes, dets = "maskrcnn_resnet50_fpn", 91, 100
    card = _card(arch, n_classes)
    model = _model(arch, n_classes, dets)
    with torch.no_grad():  # random mask logits hover at 0.5 (noise masks): make them definite
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(CPU_MASK_BIAS)
    options = dict(score_threshold=0.0, max_detections=dets, polygon_tolerance=0.0, min_area=0.0)
    _compare(
        "predict_cpu_resnet50",
        model,
        card,
        _image(800, 1066),
        1 if quick else 3,
        options,
        subject=f"{arch} random weights",
    )


def _tiled_child(kind: str, size: int) -> None:
    """Runs in a subprocess under MEMORY_CAP; prints one JSON dict."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    arch, n_classes = "maskrcnn_mobilenet_v3_fpn", 2
    card = _card(arch, n_classes)
    model = _model(arch, n_classes, 300)
    with torch.no_grad():  # random mask logits sit below 0.5: bias them so masks are not empty
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(MASK_BIAS)
    image = _image(size, size, blobs=size * size // 40000)
    t0 = time.perf_counter()
    result: dict = {"kind": kind}
    try:
        if kind == "tiled":
            pred = Predictor.from_model(
                model, card, device="cpu", score_threshold=0.0, max_detections=300
            )
            result["instances"] = len(pred.predict(image))
        else:
            result["instances"] = len(stock_predict(model, image, card))
        result["failed"] = False
    except (MemoryError, RuntimeError) as exc:
        result["failed"] = True
        result["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


def _run_child(kind: str, size: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--size", str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    # Killed outright (e.g. by the kernel's OOM killer): no JSON came back.
    return {"kind": kind, "failed": True, "error": f"exit {proc.returncode}: {proc.stderr[-200:]}"}


def bench_tiled(quick: bool) -> None:
    size = 2000 if quick else 6000
    ours = _run_child("tiled", size)
    base = _run_child("untiled", size)
    emit(
        "predict_tiled",
        [ours["seconds"]],
        baseline=[base["seconds"]] if not base["failed"] else None,
        baseline_name="untiled model(x) + full-image paste",
        target="completes within the memory cap; untiled attempt fails or needs far more memory",
        image=f"{size}x{size}",
        model="maskrcnn_mobilenet_v3_fpn random weights, 300 forced detections per tile/image",
        memory_cap_mb=MEMORY_CAP >> 20,
        ours_peak_rss_mb=round(ours.get("peak_rss_mb", 0)),
        ours_instances=ours.get("instances"),
        ours_failed=ours["failed"],
        baseline_failed=base["failed"],
        baseline_error=base.get("error"),
        baseline_seconds_until_end=round(base.get("seconds", 0), 2),
        baseline_peak_rss_mb=round(base.get("peak_rss_mb", 0)),
    )


def bench_cuda(quick: bool) -> None:
    if not torch.cuda.is_available():
        return
    arch, n_classes, dets = "maskrcnn_resnet50_fpn", 91, 100
    card = _card(arch, n_classes)
    model = _model(arch, n_classes, dets)
    images = [_image(800, 1066) for _ in range(8)]
    stock = _model(arch, n_classes, dets).cuda()
    pred = Predictor.from_model(
        model, card, device="cuda", score_threshold=0.0, max_detections=dets, batch_size=8
    )

    def stock_b1() -> None:
        for im in images:
            with torch.inference_mode():
                out = stock([to_model_input(im, card.input).cuda()])[0]
            masks = (out["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
            for m in masks:
                cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        torch.cuda.synchronize()

    def ours_b1() -> None:
        for im in images:
            pred.predict(im)
        torch.cuda.synchronize()

    def ours_b8() -> None:
        pred.predict_batch(images)
        torch.cuda.synchronize()

    repeat = 2 if quick else 5
    base = [len(images) / t for t in timeit(stock_b1, repeat)]
    common = dict(
        unit="images/s",
        baseline=base,
        baseline_name="torchvision fp32 batch 1, model(x) + paste + findContours",
        higher_is_better=True,
        target="ratio >= 2.0",
    )
    emit("predict_cuda_b1", [len(images) / t for t in timeit(ours_b1, repeat)], **common)
    emit("predict_cuda_b8", [len(images) / t for t in timeit(ours_b8, repeat)], **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--case", choices=["cpu", "cpu-resnet50", "tiled", "cuda"], action="append")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--child", choices=["tiled", "untiled"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=6000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _tiled_child(args.child, args.size)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.case or ["cpu", "cpu-resnet50", "tiled", "cuda"]
    if "cpu" in cases:
        bench_cpu(args.quick)
    if "cpu-resnet50" in cases:
        bench_cpu_resnet50(args.quick)
    if "tiled" in cases:
        bench_tiled(args.quick)
    if "cuda" in cases:
        bench_cuda(args.quick)


if __name__ == "__main__":
    main()
