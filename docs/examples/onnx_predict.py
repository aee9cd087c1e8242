"""Run a MaskLoop model exported with ``maskloop export-model`` and write COCO, without PyTorch.

Needs only numpy, onnxruntime, opencv-python(-headless) and pycocotools:

    python onnx_predict.py MODEL.onnx IMAGE [IMAGE ...] --out predictions.json

MODEL.json (the deploy card written beside MODEL.onnx) says how to convert an image, what
the labels mean and which thresholds MaskLoop uses; this script follows it:

1. convert each image as the card's ``input`` block says (channel choice, grey, intensity
   stretch, inversion of light-background images), as MaskLoop's ``to_model_input`` does;
2. run the graph (it resizes the image itself and returns boxes in the image's pixels);
3. keep detections scoring above the threshold and paste each mask onto exactly its box;
4. write a COCO results file (RLE masks, boxes, scores; categories from the card).

MaskLoop cuts images larger than the card's ``tile_size`` into overlapping tiles; this
script runs every image whole (the graph then scales it down to the model's input size),
so on such images small objects can be missed that MaskLoop finds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from pycocotools import mask as mask_utils

# Percentiles of very large images are estimated on a strided subsample, as MaskLoop does.
PERCENTILE_MAX_SAMPLES = 1 << 22


def load_card(onnx_path: Path) -> dict:
    """The deploy card beside ``onnx_path`` (same name, .json)."""
    card = json.loads(onnx_path.with_suffix(".json").read_text(encoding="utf-8"))
    if card.get("format") != "maskloop-onnx":
        raise SystemExit(f"{onnx_path.with_suffix('.json')} is not a MaskLoop ONNX card")
    return card


def read_image(path: Path) -> np.ndarray:
    """The image as H x W (grey) or H x W x 3/4 in RGB(A) order, native dtype."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"cannot read image {path}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _subsample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    if flat.size > PERCENTILE_MAX_SAMPLES:
        flat = flat[:: flat.size // PERCENTILE_MAX_SAMPLES + 1]
    return flat


def _planes(image: np.ndarray, spec: dict) -> np.ndarray:
    """H x W x C: grey, RGB (alpha dropped) or the card's ``channel`` of a multi-channel image."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] not in (1, 3):
        channel = int(spec.get("channel", 0))
        arr = arr[:, :, channel : channel + 1]
    if spec["channels"] == "gray" and arr.shape[2] == 3:
        arr = arr.astype(np.float32).mean(axis=2, keepdims=True)
    return arr


def _scaled(arr: np.ndarray, spec: dict) -> np.ndarray:
    """Values in [0, 1]: uint8 / 255 ("auto"), else stretched between two intensities."""
    mode = spec["normalize"]
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if mode == "auto" and arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    data = arr.astype(np.float32, copy=False)
    finite = np.isfinite(data)
    if mode == "fixed":
        low, high = float(spec["low"]), float(spec["high"])
    elif not finite.any():
        low, high = 0.0, 1.0
    elif mode == "minmax":
        low, high = float(data[finite].min()), float(data[finite].max())
    else:  # "percentile", or "auto" on a non-uint8 image
        valid = data if finite.all() else data[finite]
        low, high = (float(v) for v in np.percentile(_subsample(valid), spec["percentiles"]))
    if high <= low:
        high = low + 1.0
    out = (data - np.float32(low)) / np.float32(high - low)
    out = np.where(finite, out, 0.0)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def to_model_input(image: np.ndarray, spec: dict) -> np.ndarray:
    """The graph's input: float32 (3, H, W) in [0, 1], converted as the card's ``input`` says."""
    scaled = _scaled(_planes(image, spec), spec)
    invert = spec["invert"]
    if invert == "always" or (invert == "auto" and float(np.median(_subsample(scaled))) > 0.5):
        scaled = np.float32(1.0) - scaled
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


def paste(
    prob: np.ndarray, box: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> tuple[int, int, np.ndarray] | None:
    """(x0, y0, mask) of one M x M mask pasted onto exactly its box, or None when empty.

    The mask covers [x0, x1] x [y0, y1] in continuous pixel coordinates; a pixel is in when
    the bilinear probability at its centre exceeds ``threshold``.
    """
    bx0, by0, bx1, by1 = (float(v) for v in box)
    size = prob.shape[-1]
    sx, sy = (bx1 - bx0) / size, (by1 - by0) / size
    x0, x1 = max(math.floor(bx0), 0), min(math.ceil(bx1), width)
    y0, y1 = max(math.floor(by0), 0), min(math.ceil(by1), height)
    if x1 <= x0 or y1 <= y0 or sx <= 0 or sy <= 0:
        return None
    # Crop pixel (c, r) is centred at (x0 + c + 0.5, y0 + r + 0.5): mask index
    # ((x0 + c + 0.5 - bx0) / sx - 0.5, ...), mask cell i being centred at i + 0.5.
    to_mask = np.array(
        [[1 / sx, 0, (x0 + 0.5 - bx0) / sx - 0.5], [0, 1 / sy, (y0 + 0.5 - by0) / sy - 0.5]]
    )
    sampled = cv2.warpAffine(
        np.ascontiguousarray(prob, dtype=np.float32),
        to_mask,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    mask = sampled > threshold
    return (x0, y0, mask) if mask.any() else None


def session(onnx_path: Path, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session (``threads`` 0: onnxruntime's choice)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def predict(
    sess: ort.InferenceSession, card: dict, image: np.ndarray, threshold: float
) -> list[dict]:
    """Detections scoring above ``threshold``: category_id, score, box, mask crop at (x0, y0)."""
    floor = card["thresholds"]["score_floor"]
    if threshold < floor:
        raise SystemExit(f"the graph keeps only scores above {floor}; use a threshold >= {floor}")
    height, width = image.shape[:2]
    boxes, scores, labels, masks = sess.run(None, {"image": to_model_input(image, card["input"])})
    category = {c["label"]: c["id"] for c in card["categories"]}
    out = []
    for box, score, label, prob in zip(boxes, scores, labels, masks[:, 0], strict=True):
        if score <= threshold:
            continue
        pasted = paste(prob, box, height, width, card["thresholds"]["mask"])
        if pasted is None:
            continue
        x0, y0, mask = pasted
        out.append(
            {
                "category_id": category[int(label)],
                "score": float(score),
                "x0": x0,
                "y0": y0,
                "mask": mask,
            }  # fmt: skip
        )
    return out


def coco_annotation(det: dict, height: int, width: int, ann_id: int, image_id: int) -> dict:
    full = np.zeros((height, width), dtype=np.uint8)
    h, w = det["mask"].shape
    full[det["y0"] : det["y0"] + h, det["x0"] : det["x0"] + w] = det["mask"]
    rle = mask_utils.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": det["category_id"],
        "segmentation": rle,
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "score": round(det["score"], 6),
        "iscrowd": 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="MODEL.onnx (its card MODEL.json beside it)")
    parser.add_argument("images", type=Path, nargs="+", help="images to segment")
    parser.add_argument("--out", type=Path, required=True, help="COCO JSON file to write")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the card's)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    args = parser.parse_args(argv)
    card = load_card(args.model)
    threshold = card["thresholds"]["score"] if args.threshold is None else args.threshold
    sess = session(args.model, args.threads)
    coco: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c["id"], "name": c["name"]} for c in card["categories"]],
    }
    for image_id, path in enumerate(args.images, 1):
        image = read_image(path)
        height, width = image.shape[:2]
        coco["images"].append(
            {"id": image_id, "file_name": path.name, "height": height, "width": width}
        )
        for det in predict(sess, card, image, threshold):
            ann_id = len(coco["annotations"]) + 1
            coco["annotations"].append(coco_annotation(det, height, width, ann_id, image_id))
        print(f"{path}: {sum(a['image_id'] == image_id for a in coco['annotations'])} objects")
    args.out.write_text(json.dumps(coco), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
