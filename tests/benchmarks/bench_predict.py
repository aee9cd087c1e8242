"""Prediction benchmarks (issue 4): our Predictor vs torchvision's stock path, same weights.

Cases (one JSON line each, see DESIGN.md):
  predict_cpu      800x1066 image, >= 100 forced detections (score threshold 0), image in,
                   polygons out; baseline: model(x), full-image mask paste, cv2.findContours
                   on each full-size mask. ``iou_min``: worst per-instance mask IoU between
                   the two outputs (instances matched by label and score).
  predict_tiled    a 6000x6000 image (2000x2000 with --quick), light model: tiled predict
                   vs the untiled stock attempt, each in a subprocess under the same
                   address-space cap; peak RSS and time, and whether the attempt failed.
  predict_cuda_b1/_b8  only with CUDA: images/s of stock fp32 batch-1 vs ours (autocast).

Random weights (nothing downloads); run ``.venv/bin/python tests/benchmarks/bench_predict.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
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
from app.ml.models import build_model  # noqa: E402
from app.ml.predictor import Predictor  # noqa: E402
from app.ml.preprocess import to_model_input  # noqa: E402
from app.ml.zoo import ModelCard  # noqa: E402

MEMORY_CAP = 8 << 30  # address space for each tiled/untiled child process
MASK_BIAS = 2.0
CPU_MASK_BIAS = 1.0


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


def bench_cpu(quick: bool) -> None:
    arch, n_classes, dets = "maskrcnn_resnet50_fpn", 91, 100
    card = _card(arch, n_classes)
    model = _model(arch, n_classes, dets)
    with torch.no_grad():  # random mask logits hover at 0.5 (noise masks): make them definite
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(CPU_MASK_BIAS)
    image = _image(800, 1066)
    pred = Predictor.from_model(
        model,
        card,
        device="cpu",
        score_threshold=0.0,
        max_detections=dets,
        polygon_tolerance=0.0,
        min_area=0.0,
    )
    repeat = 1 if quick else 3
    ours_t, base_t = [], []
    for _ in range(repeat):  # interleaved, so load changes on a shared machine hit both
        ours_t += timeit(lambda: pred.predict(image), repeat=1, warmup=0 if ours_t else 1)
        base_t += timeit(
            lambda: stock_predict(model, image, card), repeat=1, warmup=0 if base_t else 1
        )
    ours = pred.predict(image)
    stock = stock_predict(model, image, card)
    emit(
        "predict_cpu",
        ours_t,
        baseline=base_t,
        baseline_name="torchvision model(x) + full-image paste + cv2.findContours",
        target="ratio >= 2.0, iou_min >= 0.98",
        detections=len(stock),
        instances=len(ours),
        image="800x1066",
        model=f"{arch} random weights",
        **equivalence(ours, stock, card, 800, 1066),
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
    parser.add_argument("--case", choices=["cpu", "tiled", "cuda"], action="append")
    parser.add_argument("--child", choices=["tiled", "untiled"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=6000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _tiled_child(args.child, args.size)
        return
    cases = args.case or ["cpu", "tiled", "cuda"]
    if "cpu" in cases:
        bench_cpu(args.quick)
    if "tiled" in cases:
        bench_tiled(args.quick)
    if "cuda" in cases:
        bench_cuda(args.quick)


if __name__ == "__main__":
    main()
