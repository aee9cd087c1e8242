"""Fine-tune the bundled ``cells-mobile`` model on real DSB2018 nuclei.

The exact, seeded recipe behind model_zoo/cells-mobile.pt since it learned from real images
(see README.md beside this file). It starts from the synthetic-only weights of
``train_cells_mobile.py`` and trains on every image of the DSB2018 folder except those in
its ``val.txt``:

    .venv/bin/python model_zoo/recipes/train_cells_dsb.py \\
        --data ../shared/data/dsb2018 --init /tmp/cells_mobile_synthetic.pt --cache /tmp/cells_dsb

1. converts each training image once with the card's InputSpec (``app.ml.preprocess``, the
   conversion the Predictor applies: grey, percentile stretch, dark-on-light images
   inverted) and rescales it, with its label map, to the scale the Predictor will show it
   to the model at (images of up to 512 px are resized to 512, larger ones are tiled at
   native scale);
2. trains on random 256 px crops of those (zoom 0.75-1.33x, flips, 90-degree turns,
   contrast, gamma, blur and noise) with ``app.ml.train``; a checkpoint is written each
   epoch and the same command resumes from it; ``--stop-at`` ends early and exports;
3. writes fp16 weights to ``--out``; figures come from ``maskloop evaluate --images --labels``
   on the val split (the proposal path), see README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.core.images import read_image  # noqa: E402
from app.ml.dataset import make_sample, model_scale  # noqa: E402
from app.ml.models import build_model  # noqa: E402
from app.ml.preprocess import InputSpec, to_model_input  # noqa: E402
from app.ml.train import IterationEvent, TrainConfig, train  # noqa: E402

log = logging.getLogger("train_cells_dsb")

ARCH = "maskrcnn_mobilenet_v3_fpn"
# The card's conversion: one grey plane, stretched between percentiles (dim fluorescence is
# common), and inverted when the background is light (brightfield and stained tissue), so
# every kind reaches the model as bright nuclei on a dark background.
CARD_SPEC = InputSpec(
    min_size=512, max_size=512, normalize="percentile", channels="gray", invert="auto"
)
CROP = 256
DETECTIONS = 1000


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


def prepare(data: Path, name: str, cache: Path) -> Path:
    """Convert and rescale one image and its labels once (uint8 plane, int32 labels)."""
    path = cache / "prepared" / (Path(name).stem + ".npz")
    if path.exists():
        return path
    image = read_image(data / "images" / name)
    labels = read_image(data / "labels" / name).astype(np.int32)
    plane = to_model_input(image, CARD_SPEC)[0].numpy()  # grey: the three planes are equal
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


class RealCrops(torch.utils.data.Dataset):
    """Random augmented crops of the prepared images; large images are listed once per
    512x512 they hold, so every part of the data is seen about equally often."""

    def __init__(self, files: list[Path], seed: int) -> None:
        self.planes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.index: list[int] = []
        for k, f in enumerate(files):
            with np.load(f) as z:
                self.planes.append(z["plane"])
                self.labels.append(z["labels"])
            h, w = self.planes[-1].shape
            self.index += [k] * max(1, round(h * w / (512 * 512)))
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


def fp16_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Halve the file size; load_state_dict casts back to the model's float32."""
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the DSB2018 folder (manifest.json)")
    p.add_argument("--init", type=Path, required=True, help="starting weights (synthetic model)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/cells_dsb"))
    p.add_argument("--out", type=Path, default=REPO / "model_zoo")
    p.add_argument("--iters", type=int, default=1800)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="training device: cpu, cuda, auto")
    p.add_argument("--stop-at", type=float, default=None, help="Unix time to stop and export at")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_names, val_names = load_split(args.data)
    files = [prepare(args.data, n, args.cache) for n in train_names]
    dataset = RealCrops(files, args.seed)
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
    init_sha = hashlib.sha256(args.init.read_bytes()).hexdigest()
    config = TrainConfig(
        epochs=math.ceil(args.iters * args.batch_size / len(dataset)) + 1,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer="adamw",
        weight_decay=1e-4,
        warmup_iters=50,
        clip_grad_norm=10.0,
        device=args.device,
        seed=args.seed,
        max_iters=args.iters,
        checkpoint_dir=args.cache / "run",
        resume=True,
    )

    def should_stop() -> bool:
        return args.stop_at is not None and time.time() > args.stop_at

    iterations = 0
    for event in train(model, dataset, config, should_stop=should_stop):
        if isinstance(event, IterationEvent):
            iterations = event.iteration
            if event.iteration % 10 == 0:
                log.info(
                    "iter %d/%d loss %.3f %s lr %.2e eta %.0f s",
                    event.iteration,
                    event.total_iterations,
                    event.loss,
                    " ".join(f"{k[5:]}={v:.3f}" for k, v in event.losses.items()),
                    event.lr,
                    event.eta_s,
                )
        else:
            log.info("%s", event.to_dict())
    weights = args.out / "cells-mobile.pt"
    torch.save(fp16_state(model), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    summary = {
        "iterations": iterations,
        "planned_iterations": args.iters,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_images": len(files),
        "init_sha256": init_sha,
        "weights_sha256": digest,
        "wall_time_s": round(time.time() - t0),
        "torch": torch.__version__,
        "input": CARD_SPEC.to_dict(),
    }
    (args.cache / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("wrote %s (%.1f MB) sha256 %s; %s", weights, weights.stat().st_size / 1e6, digest,
             summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
