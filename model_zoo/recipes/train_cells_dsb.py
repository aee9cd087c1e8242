"""Fine-tune the bundled ``cells-mobile`` model on real DSB2018 nuclei.

The exact, seeded recipe behind model_zoo/cells-mobile.pt since it learned from real images
(see README.md beside this file). It starts from the synthetic-only weights of
``train_cells_mobile.py`` and trains on every image of the DSB2018 folder except those in
its ``val.txt``:

    .venv/bin/python model_zoo/recipes/train_cells_dsb.py \\
        --data ../shared/data/dsb2018 --init /tmp/cells_mobile_synthetic.pt --cache /tmp/cells_dsb

1. converts each training image once with the card's InputSpec (``app.ml.preprocess``, the
   conversion the Predictor applies: grey, the red plane of light colour images,
   percentile stretch, dark-on-light images inverted) and rescales it, with its label
   map, to the scale the Predictor will show it to the model at (images of up to 512 px
   are resized to 512, larger ones are tiled at native scale);
2. trains on random 256 px crops of those (zoom 0.75-1.33x, flips, 90-degree turns,
   contrast, gamma, blur and noise) with ``app.ml.train``; a checkpoint is written each
   epoch and the same command resumes from it; ``--stop-at`` ends early and exports;
3. writes fp16 weights to ``--out`` and the model card beside them, with the figures the
   app's own evaluation path gives (``maskloop evaluate --images --labels``: the Predictor's
   proposals) on the real val split, overall and per kind, on the synthetic held-out images
   of ``train_cells_mobile.py``, and the CPU time of one 512x512 image at one thread.
   ``--card-only`` redoes step 3 for the weights already in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.core.images import read_image  # noqa: E402
from app.ml.dataset import make_sample, model_scale  # noqa: E402
from app.ml.models import PROMPT_BOX_JITTER, PROMPT_BOX_MARGIN, build_model  # noqa: E402
from app.ml.preprocess import InputSpec, to_model_input  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_cells_mobile import (  # noqa: E402
    NMS_IOU,
    RPN_PROPOSALS,
    fp16_state,
    recipe_config,
    sample_file,
    synthetic_eval_images,
    train_logged,
)

from app.demo.synthetic import generate_sample  # noqa: E402
from app.ml.eval_sources import eval_images, find_labelled_images  # noqa: E402
from app.ml.evaluate import AP_SCORE_FLOOR, EvalResult, evaluate_predictor  # noqa: E402
from app.ml.predictor import Predictor  # noqa: E402
from app.ml.zoo import ModelCard, sha256_file  # noqa: E402

log = logging.getLogger("train_cells_dsb")

ARCH = "maskrcnn_mobilenet_v3_fpn"
# The card's conversion: one grey plane, stretched between percentiles (dim fluorescence is
# common), and inverted when the background is light (brightfield and stained tissue), so
# every kind reaches the model as bright nuclei on a dark background. For light colour
# images the plane is the red one (channels="stain"), where eosin-stained stroma is light;
# stages 2-6 averaged the colours (--channels gray).
CARD_SPEC = InputSpec(
    min_size=512, max_size=512, normalize="percentile", channels="stain", invert="auto"
)
CROP = 256
DETECTIONS = 1000
INIT_DESC = "cells-mobile synthetic-only weights of train_cells_mobile.py"


def inference_scale(height: int, width: int, spec: InputSpec = CARD_SPEC) -> float:
    """The factor the Predictor shows an image to the model at: tiled images (larger than
    ``max_size``) keep native scale, smaller ones are resized by the model's transform."""
    if max(height, width) > spec.max_size:
        return 1.0
    return model_scale(height, width, spec)


def load_split(data: Path) -> tuple[list[str], list[str]]:
    manifest = json.loads((data / "manifest.json").read_text())
    val = set((data / "val.txt").read_text().split())
    files = [m["file"] for m in manifest]
    return [f for f in files if f not in val], [f for f in files if f in val]


def image_kinds(data: Path) -> dict[str, str]:
    """File name -> the manifest's kind ("gray": fluorescence, "bright": brightfield/tissue)."""
    return {m["file"]: m["kind"] for m in json.loads((data / "manifest.json").read_text())}


def check_cache(cache: Path, spec: InputSpec) -> None:
    """Prepared planes are converted once: a cache made with another conversion is refused
    rather than silently trained on."""
    path = cache / "conversion.json"
    if path.exists():
        made = InputSpec.from_dict(json.loads(path.read_text()))
        if made != spec:
            raise SystemExit(
                f"{cache} holds images converted with {made.to_dict()}, not {spec.to_dict()}; "
                "use another --cache."
            )
        return
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict()) + "\n")


def prepare(data: Path, name: str, cache: Path, spec: InputSpec) -> Path:
    """Convert and rescale one image and its labels once (uint8 plane, int32 labels)."""
    path = cache / "prepared" / (Path(name).stem + ".npz")
    if path.exists():
        return path
    image = read_image(data / "images" / name)
    labels = read_image(data / "labels" / name).astype(np.int32)
    return _save_prepared(path, image, labels, spec)


def _save_prepared(path: Path, image: np.ndarray, labels: np.ndarray, spec: InputSpec) -> Path:
    """Convert ``image`` with the card's input, rescale it and ``labels`` to the scale the
    Predictor shows it at, and save both (uint8 plane, int32 labels) to ``path``."""
    plane = to_model_input(image, spec)[0].numpy()  # grey: the three planes are equal
    s = inference_scale(*plane.shape)
    if s != 1.0:
        size = (round(plane.shape[1] * s), round(plane.shape[0] * s))
        plane = cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, plane=np.round(plane * 255).astype(np.uint8), labels=labels)
    tmp.replace(path)
    return path


def prepare_synthetic(cache: Path, index: int, spec: InputSpec) -> Path:
    """One synthetic training image of ``train_cells_mobile.py`` (seed 0, 256 px, the
    stage-1 set) converted and rescaled like a real one, for mixing into the real data."""
    path = cache / "prepared_synthetic" / f"{index:05d}.npz"
    if path.exists():
        return path
    with np.load(sample_file(cache / "synthetic", "train", 0, index, 256)) as z:
        image, labels = z["image"], z["labels"].astype(np.int32)
    return _save_prepared(path, image, labels, spec)


class RealCrops(torch.utils.data.Dataset):
    """Random augmented crops of the prepared images; large images are listed once per
    512x512 they hold, so every part of the data is seen about equally often, times the
    file's ``weight`` (brightfield is 86 of the 535 training images: it may be oversampled).
    """

    def __init__(self, files: list[Path], seed: int, weights: list[float] | None = None) -> None:
        self.planes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.index: list[int] = []
        for k, f in enumerate(files):
            with np.load(f) as z:
                self.planes.append(z["plane"])
                self.labels.append(z["labels"])
            h, w = self.planes[-1].shape
            weight = 1.0 if weights is None else weights[k]
            self.index += [k] * max(1, round(weight * h * w / (512 * 512)))
        self.seed = seed
        self.calls = 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        self.calls += 1
        rng = np.random.default_rng((self.seed, i, self.calls))
        plane, labels = self.planes[self.index[i]], self.labels[self.index[i]]
        zoom = math.exp(rng.uniform(math.log(0.75), math.log(1.33))) if rng.random() < 0.6 else 1.0
        win = max(8, round(CROP / zoom))
        plane, labels = _window(plane, labels, win, rng)
        if win != CROP:
            plane = cv2.resize(plane, (CROP, CROP), interpolation=cv2.INTER_LINEAR)
            labels = cv2.resize(labels, (CROP, CROP), interpolation=cv2.INTER_NEAREST_EXACT)
        k = int(rng.integers(4))
        plane, labels = np.rot90(plane, k), np.rot90(labels, k)
        if rng.random() < 0.5:
            plane, labels = plane[:, ::-1], labels[:, ::-1]
        x = _photometric(plane.astype(np.float32) / 255.0, rng)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        masks = torch.from_numpy((labels[None] == ids[:, None, None]).astype(np.uint8))
        image = torch.from_numpy(np.ascontiguousarray(np.repeat(x[None], 3, axis=0)))
        return make_sample(image, masks, torch.ones(len(ids), dtype=torch.int64))


def _window(
    plane: np.ndarray, labels: np.ndarray, win: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A win x win window at a random place, zero-padded where the image is smaller."""
    h, w = plane.shape
    y0 = int(rng.integers(0, max(1, h - win + 1)))
    x0 = int(rng.integers(0, max(1, w - win + 1)))
    p = np.zeros((win, win), np.uint8)
    lab = np.zeros((win, win), np.int32)
    ph, pw = min(win, h), min(win, w)
    p[:ph, :pw] = plane[y0 : y0 + ph, x0 : x0 + pw]
    lab[:ph, :pw] = labels[y0 : y0 + ph, x0 : x0 + pw]
    return p, lab


def _photometric(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure and staining differences: gamma, contrast, offset, blur, noise."""
    if rng.random() < 0.5:
        x = x ** math.exp(rng.uniform(-0.5, 0.5))
    if rng.random() < 0.5:
        x = x * rng.uniform(0.6, 1.3) + rng.uniform(-0.1, 0.15)
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (5, 5), rng.uniform(0.3, 1.3))
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.04), x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _figures(prefix: str, result: EvalResult) -> dict[str, float]:
    out = {
        f"{prefix}segm_AP": result.segm.ap,
        f"{prefix}segm_AP50": result.segm.ap50,
        f"{prefix}segm_AP75": result.segm.ap75,
    }
    if result.area_ratio is not None:
        out[f"{prefix}area_ratio_median"] = result.area_ratio.median
    return {k: round(float(v), 4) for k, v in out.items()}


def write_card(args: argparse.Namespace, weights: Path, summary: dict) -> dict:
    """Evaluate the exported weights as the app runs them and write the card beside them."""
    digest = sha256_file(weights)
    card_dict = {
        "id": "cells-mobile",
        "title": "Nuclei (fluorescence and brightfield), light CPU model",
        "description": (
            "Mask R-CNN with a MobileNetV3-Large FPN backbone, trained on synthetic nuclei "
            "(app.demo.synthetic) and then on 535 real, hand-annotated DSB2018 images "
            "(fluorescence, brightfield and stained tissue). Images with a light background "
            "are inverted before the model sees them, so dark nuclei on a light background "
            "work like fluorescent ones"
            + (
                " (colour ones through their red plane, where eosin-stained tissue is light)"
                if summary["input"].get("channels") == "stain"
                else ""
            )
            + ". Its mask head also learned from loose, drag-like boxes, "
            "for the box and click assists. Works offline; fine-tune it on your own images."
        ),
        "architecture": ARCH,
        "categories": [{"id": 1, "name": "nucleus"}],
        "input": summary["input"],
        "detections_per_img": DETECTIONS,
        "rpn_proposals": RPN_PROPOSALS,
        "nms_iou": NMS_IOU,
        "weights": {"file": weights.name, "sha256": digest},
        "license": "MIT",
    }
    card = ModelCard.from_dict(card_dict)
    card.path = weights.with_suffix(".json")
    predictor = Predictor(card, device="cpu", score_threshold=AP_SCORE_FLOOR)
    pairs = find_labelled_images(
        args.data / "images",
        args.data / "labels",
        only=args.data / "val.txt",
        manifest=args.data / "manifest.json",
    )
    real = evaluate_predictor(predictor, eval_images(pairs), max_dets=DETECTIONS)
    log.info("real val: %s", real.to_metrics())
    synthetic_files = [
        sample_file(args.cache / "synthetic", "val", 1, i, 256 if i % 2 else 384)
        for i in range(40)
    ]
    synthetic = evaluate_predictor(
        predictor, synthetic_eval_images(synthetic_files), max_dets=DETECTIONS
    )
    log.info("synthetic held-out: %s", synthetic.to_metrics())
    metrics: dict[str, object] = {**_figures("", real)}
    metrics["bbox_AP50"] = round(real.bbox.ap50, 4)
    for kind, part in real.per_kind.items():
        metrics.update(_figures(f"{kind}_", part))
    metrics.update(_figures("synthetic_", synthetic))
    metrics["max_dets"] = DETECTIONS
    metrics["eval_images"] = real.images
    metrics["eval_instances"] = real.instances
    metrics["reviewer_accepted"] = real.reviewer.accepted
    metrics["reviewer_edited"] = real.reviewer.edited
    metrics["reviewer_rejected"] = real.reviewer.rejected
    metrics["reviewer_missed"] = real.reviewer.missed
    torch.set_num_threads(1)
    image = generate_sample(7, size=(512, 512)).image
    predictor_1t = Predictor(card, device="cpu", score_threshold=0.5)
    predictor_1t.predict(image)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        predictor_1t.predict(image)
        times.append(time.perf_counter() - t0)
    metrics["cpu_s_per_512px_image_1_thread"] = round(sorted(times)[2], 3)
    metrics["dataset"] = (
        "DSB2018 val.txt: 62 real images (52 fluorescence 'gray', 10 brightfield/tissue "
        "'bright'), 2,376 nuclei; figures of the Predictor's proposals (maskloop evaluate "
        "--images --labels); synthetic_*: 40 held-out synthetic images (seed 1, 256/384 px)"
    )
    card_dict["metrics"] = metrics
    card_dict["training_data"] = {
        "name": "2018 Data Science Bowl stage-1 training set (BBBC038v1), with the community's "
        "mask fixes",
        "license": "CC0 1.0 (public domain)",
        "citation": "Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 "
        "Data Science Bowl, Nature Methods 16, 1247-1253 (2019)",
        "images": summary["train_images"],
        "split": "every image of the folder except val.txt; figures on val.txt",
        "also": "synthetic nuclei (app.demo.synthetic) for the starting weights"
        + (
            f"; {summary['synthetic_images']} of them mixed into this stage"
            if summary.get("synthetic_images")
            else ""
        ),
    }
    card_dict["recipe"] = {
        "command": (
            "python model_zoo/recipes/train_cells_dsb.py --data DSB2018_FOLDER "
            "--init INIT_WEIGHTS --cache /tmp/cells_dsb "
            f"--iters {summary['planned_iterations']} --batch-size {summary['batch_size']} "
            f"--lr {summary['lr']} --seed {summary['seed']} --threads 1"
            + (
                f" --bright-weight {summary['bright_weight']}"
                if summary.get("bright_weight", 1.0) != 1.0
                else ""
            )
            + (f" --synthetic {summary['synthetic_images']}" if summary.get("synthetic_images") else "")
        ),
        "init": f"{summary.get('init_desc', INIT_DESC)} (sha256 {summary['init_sha256']})",
        **{k: summary[k] for k in ("iterations", "planned_iterations", "batch_size", "lr",
                                   "seed", "wall_time_s", "torch")},
        "crop": CROP,
        "mask_head": "also trained on loose boxes (app.ml.models.loose_box_mask_loss: ground-"
        f"truth box sides moved by up to {PROMPT_BOX_JITTER:.0%}, widened by "
        f"{PROMPT_BOX_MARGIN:.0%} each side, as assists prompt it)",
        "optimizer": "adamw",
        "schedule": "linear warm-up 50 iterations, cosine",
        "device": "cpu",
    }
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(card_dict, indent=2) + "\n")
    log.info("wrote %s", path)
    return card_dict


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the DSB2018 folder (manifest.json)")
    p.add_argument("--init", type=Path, required=True, help="starting weights (synthetic model)")
    p.add_argument("--init-desc", default=INIT_DESC, help="what --init is, for the card")
    p.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="also train on this many synthetic images (stage 1's set, converted alike)",
    )
    p.add_argument(
        "--bright-weight",
        type=float,
        default=1.0,
        help="how many times more often brightfield/tissue images are sampled",
    )
    p.add_argument(
        "--channels",
        choices=["stain", "gray"],
        default=CARD_SPEC.channels,
        help="the card's input.channels: stain (the red plane of light colour images, "
        "stage 7) or gray (colours averaged, stages 2-6); each needs its own --cache",
    )
    p.add_argument("--cache", type=Path, default=Path("/tmp/cells_dsb"))
    p.add_argument("--out", type=Path, default=REPO / "model_zoo")
    p.add_argument("--iters", type=int, default=1800)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="training device: cpu, cuda, auto")
    p.add_argument("--stop-at", type=float, default=None, help="Unix time to stop and export at")
    p.add_argument(
        "--card-only", action="store_true", help="evaluate the weights in --out, write the card"
    )
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(args.threads)
    weights = args.out / "cells-mobile.pt"
    if args.card_only:
        write_card(args, weights, json.loads((args.cache / "summary.json").read_text()))
        return 0
    t0 = time.time()
    spec = replace(CARD_SPEC, channels=args.channels)
    check_cache(args.cache, spec)
    train_names, val_names = load_split(args.data)
    files = [prepare(args.data, n, args.cache, spec) for n in train_names]
    kinds = image_kinds(args.data)
    sampling = [args.bright_weight if kinds[n] == "bright" else 1.0 for n in train_names]
    synthetic = [prepare_synthetic(args.cache, i, spec) for i in range(args.synthetic)]
    dataset = RealCrops(files + synthetic, args.seed, sampling + [1.0] * len(synthetic))
    log.info(
        "%d training images (%d crops an epoch), %d val images held out; data ready in %.0f s",
        len(files), len(dataset), len(val_names), time.time() - t0,
    )
    torch.manual_seed(args.seed)
    model = build_model(
        ARCH, num_classes=2, min_size=CROP, max_size=CROP, detections_per_img=DETECTIONS
    )
    init = torch.load(args.init, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init.items()})
    init_sha = sha256_file(args.init)
    config = recipe_config(args, len(dataset))

    iterations = train_logged(model, dataset, config, args.stop_at)
    torch.save(fp16_state(model), weights)
    digest = sha256_file(weights)
    summary = {
        "iterations": iterations,
        "planned_iterations": args.iters,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_images": len(files),
        "init_sha256": init_sha,
        "init_desc": args.init_desc,
        "bright_weight": args.bright_weight,
        "synthetic_images": args.synthetic,
        "weights_sha256": digest,
        "wall_time_s": round(time.time() - t0),
        "torch": torch.__version__,
        "input": spec.to_dict(),
    }
    (args.cache / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("wrote %s (%.1f MB) sha256 %s; %s", weights, weights.stat().st_size / 1e6, digest,
             summary)
    write_card(args, weights, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
