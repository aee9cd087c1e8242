"""Run a MaskLoop model exported with ``maskloop export-model`` and write COCO, without PyTorch.

Needs only numpy, onnxruntime, opencv-python(-headless) and pycocotools:

    python onnx_predict.py MODEL.onnx IMAGE [IMAGE ...] --out predictions.json

MODEL.json (the deploy card written beside MODEL.onnx) says how to convert an image, what
the labels mean and which thresholds MaskLoop uses; this script follows it as MaskLoop's
Predictor does:

1. an image larger than the card's ``tile_size`` is cut into overlapping tiles (the model
   then sees every part at its own resolution), converted with the whole image's
   intensity range and inversion so that objects look alike in every tile;
2. each image or tile is converted as the card's ``input`` block says (channel choice,
   grey, intensity stretch, inversion of light-background images);
3. the graph resizes it itself and returns boxes in its pixels, scores, labels and masks;
4. detections scoring above the threshold keep their mask, pasted onto exactly their box;
   the parts of an object that tile borders cut are joined;
5. a COCO results file is written (RLE masks, boxes, scores; categories from the card).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from pycocotools import mask as mask_utils

# Percentiles of very large images are estimated on a strided subsample, as MaskLoop does.
PERCENTILE_MAX_SAMPLES = 1 << 22
TILE_MATCH_IOU = 0.5


@dataclass
class Detection:
    """One object: a boolean mask over its box region, placed at (x0, y0) in the image."""

    x0: int
    y0: int
    mask: np.ndarray
    score: float
    label: int
    tile: int = 0

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The mask inside an image window (False where it does not reach)."""
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        ix0, iy0, ix1, iy1 = max(x0, self.x0), max(y0, self.y0), min(x1, self.x1), min(y1, self.y1)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.mask[
                iy0 - self.y0 : iy1 - self.y0, ix0 - self.x0 : ix1 - self.x0
            ]
        return out


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


# -- input conversion (MaskLoop's app/ml/preprocess.py) ---------------------------------------


def _subsample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    if flat.size > PERCENTILE_MAX_SAMPLES:
        flat = flat[:: flat.size // PERCENTILE_MAX_SAMPLES + 1]
    return flat


def _planes(image: np.ndarray, spec: dict) -> tuple[np.ndarray, dict]:
    """H x W x C: grey, RGB (alpha dropped) or the card's ``channel`` of a multi-channel image;
    and ``spec`` with the inversion fixed where "stain" decided it (on the red plane)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] not in (1, 3):
        channel = int(spec.get("channel", 0))
        if channel >= arr.shape[2]:
            raise SystemExit(f"the card's input uses channel {channel}; the image has fewer")
        arr = arr[:, :, channel : channel + 1]
    if spec["channels"] == "rgb" or arr.shape[2] != 3:
        return arr, spec
    if spec["channels"] == "stain":
        # a light colour image (brightfield, stained tissue) gives its red plane
        red = arr[:, :, :1].astype(np.float32)
        if spec["invert"] == "auto":
            light = _inverts(_scaled(red, spec), spec)
            spec = {**spec, "invert": "always" if light else "none"}
        if spec["invert"] == "always":
            return red, spec
    return arr.astype(np.float32).mean(axis=2, keepdims=True), spec


def _range(arr: np.ndarray, spec: dict) -> tuple[float, float] | None:
    """The intensities stretched to 0 and 1; None for bool, and for uint8 with "auto" (/ 255)."""
    mode = spec["normalize"]
    if arr.dtype == np.bool_ or (mode == "auto" and arr.dtype == np.uint8):
        return None
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
    return (low, high) if high > low else (low, low + 1.0)


def _scaled(arr: np.ndarray, spec: dict) -> np.ndarray:
    """Values in [0, 1]: bool as 0/1, uint8 / 255 ("auto"), else stretched by ``_range``."""
    found = _range(arr, spec)
    if found is None:
        return arr.astype(np.float32) / np.float32(255.0 if arr.dtype == np.uint8 else 1.0)
    low, high = found
    data = arr.astype(np.float32, copy=False)
    out = (data - np.float32(low)) / np.float32(high - low)
    out = np.where(np.isfinite(data), out, 0.0)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def _inverts(scaled: np.ndarray, spec: dict) -> bool:
    if spec["invert"] == "auto":  # a light background: dark objects become bright
        return float(np.median(_subsample(scaled))) > 0.5
    return spec["invert"] == "always"


def to_model_input(image: np.ndarray, spec: dict) -> np.ndarray:
    """The graph's input: float32 (3, H, W) in [0, 1], converted as the card's ``input`` says."""
    arr, spec = _planes(image, spec)
    scaled = _scaled(arr, spec)
    if _inverts(scaled, spec):
        scaled = np.float32(1.0) - scaled
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


def whole_image_spec(image: np.ndarray, spec: dict) -> dict:
    """``spec`` with the whole image's intensity range and inversion fixed, so that every tile
    is converted alike (estimated on at most ~4 million evenly strided pixels)."""
    step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / PERCENTILE_MAX_SAMPLES)))
    arr, spec = _planes(np.asarray(image)[::step, ::step], spec)
    fixed = dict(spec)
    found = _range(arr, spec)
    if found is not None:
        fixed.update(normalize="fixed", low=found[0], high=found[1])
    if spec["invert"] == "auto":
        fixed["invert"] = "always" if _inverts(_scaled(arr, spec), spec) else "none"
    return fixed


# -- tiles (MaskLoop's app/ml/tiling.py) ------------------------------------------------------


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tiles(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) windows of at most ``tile`` px overlapping by at least ``overlap``."""
    if max(width, height) <= tile:
        return [(0, 0, width, height)]
    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in _starts(height, tile, overlap)
        for x in _starts(width, tile, overlap)
    ]


def merge_tiles(dets: list[Detection], windows: list[tuple[int, int, int, int]]) -> list[Detection]:
    """Join detections of one object seen by two overlapping tiles: same label, and masks
    that agree (IoU >= 0.5) inside the window both tiles saw. A joined object is the union
    of its parts, with the best part's score."""
    parent = list(range(len(dets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def touching(tile: int, win: tuple[int, int, int, int]) -> list[int]:
        return [
            i
            for i, d in enumerate(dets)
            if d.tile == tile
            and d.x0 < win[2]
            and d.x1 > win[0]
            and d.y0 < win[3]
            and d.y1 > win[1]
        ]

    for ta, a in enumerate(windows):
        for tb in range(ta + 1, len(windows)):
            b = windows[tb]
            shared = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
            if shared[2] <= shared[0] or shared[3] <= shared[1]:
                continue
            for p in touching(ta, shared):
                for q in touching(tb, shared):
                    dp, dq = dets[p], dets[q]
                    meet = min(dp.x1, dq.x1) > max(dp.x0, dq.x0) and min(dp.y1, dq.y1) > max(
                        dp.y0, dq.y0
                    )
                    if not meet or dp.label != dq.label or find(p) == find(q):
                        continue
                    mp, mq = dp.window(*shared), dq.window(*shared)
                    union = np.count_nonzero(mp | mq)
                    if union and np.count_nonzero(mp & mq) / union >= TILE_MATCH_IOU:
                        parent[find(q)] = find(p)
    groups: dict[int, list[Detection]] = {}
    for i, det in enumerate(dets):
        groups.setdefault(find(i), []).append(det)
    merged = []
    for group in groups.values():
        x0, y0 = min(d.x0 for d in group), min(d.y0 for d in group)
        x1, y1 = max(d.x1 for d in group), max(d.y1 for d in group)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for d in group:
            mask |= d.window(x0, y0, x1, y1)
        best = max(group, key=lambda d: d.score)
        merged.append(Detection(x0, y0, mask, best.score, best.label, best.tile))
    return merged


# -- the model --------------------------------------------------------------------------------


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
) -> list[Detection]:
    """The image's detections scoring above ``threshold``, best first, in image pixels."""
    floor = card["thresholds"]["score_floor"]
    if threshold < floor:
        raise SystemExit(f"the graph keeps only scores above {floor}; use a threshold >= {floor}")
    height, width = image.shape[:2]
    overlap = min(card["tile_overlap"], card["tile_size"] // 2 - 1)
    windows = tiles(width, height, card["tile_size"], overlap)
    spec = whole_image_spec(image, card["input"]) if len(windows) > 1 else card["input"]
    dets = []
    for index, (x0, y0, x1, y1) in enumerate(windows):
        x = to_model_input(image[y0:y1, x0:x1], spec)
        boxes, scores, labels, masks = sess.run(None, {"image": x})
        for box, score, label, prob in zip(boxes, scores, labels, masks[:, 0], strict=True):
            if score <= threshold:
                continue
            pasted = paste(prob, box, y1 - y0, x1 - x0, card["thresholds"]["mask"])
            if pasted is not None:
                cx, cy, mask = pasted
                dets.append(Detection(x0 + cx, y0 + cy, mask, float(score), int(label), index))
    if len(windows) > 1:
        dets = merge_tiles(dets, windows)
    return sorted(dets, key=lambda d: -d.score)


# -- COCO -------------------------------------------------------------------------------------


def coco_annotation(det: Detection, height: int, width: int, category_id: int) -> dict:
    """A COCO result: the mask as compressed RLE over the whole image, its box and score."""
    full = np.zeros((height, width), dtype=np.uint8)
    full[det.y0 : det.y1, det.x0 : det.x1] = det.mask
    rle = mask_utils.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "category_id": category_id,
        "segmentation": rle,
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "score": round(det.score, 6),
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
    category = {c["label"]: c["id"] for c in card["categories"]}
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
        dets = predict(sess, card, image, threshold)
        for det in dets:
            ann = coco_annotation(det, height, width, category[det.label])
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": image_id, **ann}
            )
        print(f"{path}: {len(dets)} objects")
    args.out.write_text(json.dumps(coco), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
