"""Parsers of ``maskloop train`` and ``maskloop evaluate``.

Kept apart from :mod:`app.cli.train_cmds` so that building the command line (``--help``,
``--version``) imports no torch: the commands load their implementation when they run.
Choices and defaults come from the torch-free app.ml.defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.ml.defaults import (
    DEFAULT_MAX_DETS,
    DEFAULT_PROPOSAL_SCORE,
    FINE_TUNE_BATCH_SIZE,
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LR,
    OPTIMIZERS,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``evaluate``."""
    _add_train(sub)
    _add_evaluate(sub)


def _run_train(args: argparse.Namespace) -> int:
    from .train_cmds import run_train

    return run_train(args)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .train_cmds import run_evaluate

    return run_evaluate(args)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model on the project's done images and register a new version",
        description=(
            "Fine-tune a model on the images marked done and register the result as the "
            "project's next model version (PROJECT/models/v<N>.pt with its card), evaluated "
            "each epoch on a held-out validation split. The split is stored in the project "
            "and decided by a hash of each image's path, so it stays put as images are "
            "added. With a single done image the model is evaluated on its training image "
            "(a warning says so). The new version becomes the active model unless "
            "--no-activate. Ctrl-C stops after the current iteration and keeps a checkpoint "
            "in PROJECT/models/checkpoints; continue it with --resume. An interrupted or "
            "failed run registers nothing. Under torchrun (e.g. torchrun --nproc-per-node 4 "
            "$(which maskloop) train PROJECT) the same command trains on several GPUs."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument(
        "--base-model",
        metavar="ID",
        help="model to start from: a zoo card id (see `maskloop models`) or a project "
        "version v<N> (default: the active model)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        default=FINE_TUNE_EPOCHS,
        help="passes over the training images (%(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        default=FINE_TUNE_BATCH_SIZE,
        help="images per step, per GPU (%(default)s)",
    )
    p.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        default=FINE_TUNE_LR,
        help="peak learning rate (%(default)s; fine-tuning on a few images drifts at 1e-3)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adamw",
        help="optimizer (%(default)s)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"
    )
    p.add_argument("--max-iters", type=int, metavar="N", help="stop after N steps (quick trials)")
    p.add_argument(
        "--update-bn-stats",
        action="store_true",
        help="let BatchNorm running statistics change (default: kept from the base model, "
        "which suits fine-tuning on a few images with small batches; use this for large "
        "batches of many images)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        default=0.2,
        help="share of new done images held out (0.2)",
    )
    p.add_argument("--workers", type=int, metavar="N", default=0, help="data loading processes (0)")
    p.add_argument("--seed", type=int, metavar="N", default=0, help="random seed of the run (0)")
    _add_max_dets(p)
    p.add_argument("--name", default="", help="a name for the new version")
    p.add_argument("--no-activate", action="store_true", help="keep the current active model")
    p.add_argument(
        "--events-json",
        action="store_true",
        help="instead of a progress bar, print one JSON object per line on stdout (what the "
        "GUI reads): the trainer's iteration, epoch and finished events, then "
        '{"event": "registered", "version": N, "metrics": {...}} or '
        '{"event": "error", "message": ...}; other messages go to stderr',
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue the interrupted run from its checkpoint"
    )
    group.add_argument(
        "--restart",
        action="store_true",
        help="discard an interrupted run's checkpoint and start over",
    )
    p.set_defaults(func=_run_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a model: COCO AP (segm, bbox) and what a reviewer would have to fix",
        description=(
            "Run a model on annotated images and report COCO AP, AP50, AP75 and AP by object "
            "size for masks (segm) and boxes (bbox), computed at up to --max-dets detections "
            "per image (COCOeval's usual summary stops at 100, too few for dense cell "
            "images), plus reviewer counts: proposals accepted as is (mask IoU >= 0.85), to "
            "edit (IoU 0.5-0.85), to reject, and objects missed, and the median predicted/true "
            "area of matched objects (1.00: masks fit). Figures are measured on the proposals "
            "themselves (the card's conversion, tiling, thresholds and polygons). By default "
            "the project's validation images are used; --coco evaluates on a COCO file from "
            "any tool, --images DIR --labels DIR on an image folder and its instance label "
            "maps (no project needed), with figures per kind from --manifest or subfolders."
        ),
    )
    p.add_argument(
        "project",
        type=Path,
        nargs="?",
        help="project folder (its models and active model); optional with --images/--labels",
    )
    p.add_argument("--model", metavar="ID", help="zoo card id or version v<N> (default: the project's active model, else cells-mobile)")
    p.add_argument(
        "--split",
        choices=("val", "train", "all"),
        default="val",
        help="which done images of the project to use (val)",
    )
    p.add_argument("--coco", type=Path, metavar="FILE", help="evaluate on this COCO instances file")
    p.add_argument(
        "--images-root",
        type=Path,
        metavar="DIR",
        help="folder the COCO file's image names are relative to (default: the file's folder)",
    )
    p.add_argument("--images", type=Path, metavar="DIR", help="folder of images to evaluate on")
    p.add_argument(
        "--labels",
        type=Path,
        metavar="DIR",
        help="instance label maps for --images (same names, 0 = background, 1..N objects)",
    )
    p.add_argument(
        "--only",
        type=Path,
        metavar="FILE",
        help="with --images: evaluate only the image names listed in FILE, one a line",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help='with --images: JSON list of {"file": NAME, "kind": KIND} for figures per kind '
        "(default: per subfolder, if any)",
    )
    _add_max_dets(p)
    p.add_argument(
        "--score",
        type=float,
        metavar="S",
        default=DEFAULT_PROPOSAL_SCORE,
        help="lowest score of a proposal a reviewer sees, for the reviewer counts (%(default)s)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run_evaluate)


def _add_max_dets(p: argparse.ArgumentParser) -> None:
    """``--max-dets``, shared by train (per-epoch validation) and evaluate."""
    p.add_argument(
        "--max-dets",
        type=int,
        metavar="N",
        default=DEFAULT_MAX_DETS,
        help="detections per image for AP (%(default)s)",
    )
