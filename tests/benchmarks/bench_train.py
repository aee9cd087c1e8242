"""Training throughput and the bundled model (one JSON line a case, ``_bench.emit``).

- ``train_cpu``: images/s of app.ml.train vs torchvision's reference loop (plain
  ``model(images, targets)`` + SGD) on the same synthetic data and the same model, measured
  in rounds that alternate the two so a busy machine affects both alike.
- ``train_cuda_amp``: the same on CUDA, our engine with AMP vs the fp32 reference loop
  (only printed when CUDA is available).
- ``bundled_model``: cells-mobile's held-out synthetic metrics, recomputed here (not read
  from its card), and its CPU inference time on a 512x512 image.

    .venv/bin/python tests/benchmarks/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
for p in (Path(__file__).resolve().parent, REPO, REPO / "model_zoo" / "recipes"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from _bench import emit  # noqa: E402
from train_cells_mobile import sample_file, synthetic_eval_images  # noqa: E402

from app.demo.synthetic import generate_sample  # noqa: E402
from app.ml import zoo  # noqa: E402
from app.ml.dataset import make_sample  # noqa: E402
from app.ml.evaluate import AP_SCORE_FLOOR, evaluate_predictor  # noqa: E402
from app.ml.metric_keys import EVAL_IMAGES, SEGM_AP50  # noqa: E402
from app.ml.models import build_model  # noqa: E402
from app.ml.predictor import Predictor  # noqa: E402
from app.ml.preprocess import InputSpec, to_model_input  # noqa: E402
from app.ml.train import TrainConfig, collate, train  # noqa: E402
from app.ml.train_events import IterationEvent  # noqa: E402

LR = 0.005


def synthetic_samples(n: int, size: int) -> list:
    """Fixed detection samples (no augmentation: the loop, not the data, is measured)."""
    spec = InputSpec()
    out = []
    for i in range(n):
        s = generate_sample(1000 + i, size=(size, size), n_cells=(15, 30))
        ids = torch.arange(1, int(s.labels.max()) + 1)
        masks = (torch.from_numpy(s.labels.astype("int64"))[None] == ids[:, None, None]).to(
            torch.uint8
        )
        out.append(
            make_sample(
                to_model_input(s.image, spec), masks, torch.ones(len(ids), dtype=torch.int64)
            )
        )
    return out


def fresh_model(size: int, state: dict | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=size, max_size=size)
    if state is not None:
        model.load_state_dict(state)
    return model


def run_ours(model, data, iters: int, batch: int, device: str, amp: bool | None) -> list[float]:
    """Wall seconds between consecutive iterations (data loading included), first dropped."""
    config = TrainConfig(
        epochs=iters * batch // len(data) + 2,
        batch_size=batch,
        lr=LR,
        optimizer="sgd",
        warmup_iters=0,
        device=device,
        amp=amp,
        max_iters=iters + 1,
        freeze_bn_stats=False,  # as the reference loop (model.train())
    )
    times, last = [], time.perf_counter()
    for event in train(model, data, config):
        if isinstance(event, IterationEvent):
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return times[1:]


def run_reference(model, data, iters: int, batch: int, device: str) -> list[float]:
    """torchvision's detection reference loop reduced to its core (fp32, SGD momentum 0.9)."""
    dev = torch.device(device)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, collate_fn=collate)
    times: list[float] = []
    while len(times) < iters + 1:
        last = time.perf_counter()
        for images, targets in loader:
            images = [im.as_subclass(torch.Tensor).to(dev) for im in images]
            targets = [
                {k: v.as_subclass(torch.Tensor).to(dev) for k, v in t.items()} for t in targets
            ]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.detach().item()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if len(times) >= iters + 1:
                break
    return times[1:]


def bench_training(name: str, device: str, args, target: str) -> None:
    size, batch, iters, rounds = (128, 2, 3, 1) if args.quick else (256, 4, 6, 6)
    data = synthetic_samples(batch * 2, size)
    state = fresh_model(size, None).state_dict()
    ours: list[float] = []
    ref: list[float] = []
    for _ in range(rounds):
        amp = True if device == "cuda" else None
        ours += [
            batch / t for t in run_ours(fresh_model(size, state), data, iters, batch, device, amp)
        ]
        ref += [
            batch / t for t in run_reference(fresh_model(size, state), data, iters, batch, device)
        ]
    emit(
        name,
        ours,
        unit="images/s",
        baseline=ref,
        baseline_name="torchvision reference loop (model(images, targets) + SGD, fp32)",
        target=target,
        higher_is_better=True,
        image_size=size,
        batch_size=batch,
        threads=torch.get_num_threads(),
    )


def bench_bundled(args) -> None:
    card = zoo.get_card("cells-mobile")
    model = zoo.load_model(card, device="cpu")
    n_val = 6 if args.quick else card.metrics.get(EVAL_IMAGES, 40)
    with tempfile.TemporaryDirectory() as tmp:
        files = [
            sample_file(Path(tmp), "val", card.recipe.get("seed", 0) + 1, i, 256 if i % 2 else 384)
            for i in range(int(n_val))
        ]
        result = evaluate_predictor(
            Predictor(card, device="cpu", score_threshold=AP_SCORE_FLOOR),
            synthetic_eval_images(files),
            max_dets=card.detections_per_img,
        )
    image = to_model_input(generate_sample(7, size=(512, 512)).image, card.input)
    times = []
    with torch.inference_mode():
        model([image])
        for _ in range(1 if args.quick else 5):
            t0 = time.perf_counter()
            model([image])
            times.append(time.perf_counter() - t0)
    emit(
        "bundled_model",
        times,
        unit="s",
        target="held-out synthetic segm AP50 >= 0.85",
        what="CPU inference time of one 512x512 image; metrics on held-out synthetic images",
        metrics={
            "segm_AP": result.segm.ap,
            "segm_AP50": result.segm.ap50,
            "bbox_AP50": result.bbox.ap50,
            "max_dets": result.max_dets,
            "images": result.images,
            "instances": result.instances,
        },
        card_segm_AP50=card.metrics.get(SEGM_AP50),
        threads=torch.get_num_threads(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--case", choices=("all", "train", "bundled"), default="all", help="what to run (all)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case in ("all", "train"):
        bench_training("train_cpu", "cpu", args, ">= 1.0x the reference loop's images/s")
        if torch.cuda.is_available():
            bench_training(
                "train_cuda_amp", "cuda", args, ">= 1.5x the fp32 reference loop's images/s"
            )
    if args.case in ("all", "bundled"):
        bench_bundled(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
