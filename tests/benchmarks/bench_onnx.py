"""ONNX benchmark: the exported bundled model in onnxruntime vs the torch Predictor, one image.

Case (one JSON line, see DESIGN.md):
  onnx_cpu   images/s on the CPU of the cells-mobile model exported by
             ``maskloop export-model`` and run as docs/examples/onnx_predict.py runs it
             (numpy input conversion, onnxruntime, each mask pasted onto its box), against the
             Predictor's same stages (``to_model_input``, ``detect``, ``masks_in_boxes``), on
             a real 256x256 fluorescence image of 61 nuclei (the model sees it at 512x512, the
             size of each tile of a larger image), score > 0.5, same thread count for both.
             Also reported from the same run: the export time, the detections of each, the
             largest box difference (px) and the smallest mask IoU of matched detections.

Nothing downloads; run ``.venv/bin/python tests/benchmarks/bench_onnx.py [--threads N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _bench import emit, timeit  # noqa: E402

from app import paths  # noqa: E402
from app.core.images import read_image  # noqa: E402
from app.ml import zoo  # noqa: E402
from app.ml.onnx_export import export_onnx  # noqa: E402
from app.ml.predictor import Predictor, RawDetections, masks_in_boxes, usable_cores  # noqa: E402
from app.ml.preprocess import to_model_input  # noqa: E402
from app.ml.tiling import MaskCrop  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "onnx_predict.py"
IMAGE = paths.bundle_root() / "resources" / "demo_real" / "dsb2018_308084bdd358e0bd.png"
THRESHOLD = 0.5


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("onnx_predict_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _full(x0: int, y0: int, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
    return out


def agreement(
    example: ModuleType, onnx_out: list[np.ndarray], ref: RawDetections, shape: tuple[int, int]
) -> dict[str, float]:
    """Largest box difference (px) and smallest mask IoU over detections above the
    threshold, matched by box IoU; masks pasted by the example and by ``masks_in_boxes``."""
    boxes, _, _, masks = (a[onnx_out[1] > THRESHOLD] for a in onnx_out)
    keep = ref.scores > THRESHOLD
    ref_boxes, ref_scores = ref.boxes.numpy()[keep], ref.scores[keep]
    lt = np.maximum(ref_boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(ref_boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    ref_area = np.prod(ref_boxes[:, 2:] - ref_boxes[:, :2], axis=1)
    match = (inter / (ref_area[:, None] + area[None, :] - inter)).argmax(axis=1)
    crops = {c.score: c for c in masks_in_boxes(ref, *shape)}
    worst_iou = 1.0
    for i, j in enumerate(match):
        crop = crops.get(float(ref_scores[i]))
        pasted = example.paste(masks[j, 0], boxes[j], *shape)
        if crop is None or pasted is None:
            worst_iou = min(worst_iou, float(crop is None and pasted is None))
            continue
        a, b = _full(*pasted, shape), _full(crop.x0, crop.y0, crop.mask, shape)
        worst_iou = min(worst_iou, np.count_nonzero(a & b) / np.count_nonzero(a | b))
    return {
        "matched": int(len(set(match.tolist()))),
        "box_diff_max_px": round(float(np.abs(boxes[match] - ref_boxes).max()), 5),
        "mask_iou_min": round(worst_iou, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=usable_cores(), help="CPU threads")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    example = _example()
    card = zoo.get_card("cells-mobile")
    image = read_image(IMAGE)
    height, width = image.shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        exported = export_onnx(card, Path(folder) / "cells.onnx")
        deploy = example.load_card(exported.onnx_path)
        session = example.session(exported.onnx_path, args.threads)
        predictor = Predictor(card, device="cpu", score_threshold=THRESHOLD)

        def onnx_run() -> list:
            return example.predict(session, deploy, image, THRESHOLD)

        def torch_run() -> list[MaskCrop]:
            raw = predictor.detect([to_model_input(image, card.input)])[0]
            return masks_in_boxes(raw, height, width)

        check = agreement(
            example,
            session.run(None, {"image": example.to_model_input(image, deploy["input"])}),
            predictor.detect([to_model_input(image, card.input)])[0],
            (height, width),
        )
        detections = {"onnx": len(onnx_run()), "torch": len(torch_run())}
        onnx_s = timeit(onnx_run, args.repeat)
        torch_s = timeit(torch_run, args.repeat)
        emit(
            "onnx_cpu",
            [1 / t for t in onnx_s],
            unit="images/s",
            baseline=[1 / t for t in torch_s],
            baseline_name="torch Predictor (to_model_input, detect, masks_in_boxes)",
            higher_is_better=True,
            image=f"{IMAGE.name} {width}x{height}",
            threads=args.threads,
            detections=detections,
            export_s=round(exported.seconds, 1),
            **check,
        )


if __name__ == "__main__":
    main()
