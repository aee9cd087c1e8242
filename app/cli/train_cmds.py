"""``maskloop train`` and ``maskloop evaluate``: the retrain half of the loop.

What the commands do once parsed; their parsers are in :mod:`app.cli.train_parsers`, so
torch is imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.cli.model_ids import model_card
from app.core.atomic import remove_stale_temps, write_json_atomic
from app.core.store import ProjectStore
from app.core.types import Category
from app.errors import MaskLoopError
from app.ml import zoo
from app.ml.categories import categories_keeping_heads, model_labels
from app.ml.dataset import CocoFileDataset, ProjectDataset, category_labels, split_ids
from app.ml.devices import device_from_arg
from app.ml.eval_sources import eval_images, find_labelled_images
from app.ml.evaluate import (
    AP_SCORE_FLOOR,
    EvalImage,
    EvalResult,
    evaluate_model,
    evaluate_predictor,
)
from app.ml.metric_keys import (
    AP_NAMES,
    AREA_RATIO_MEDIAN,
    IOU_TYPES,
    MAX_DETS,
    REVIEWER_KINDS,
    SEGM_AP,
    SEGM_AP50,
    VAL_IMAGES,
    ap_key,
    reviewer_key,
)
from app.ml.models import replace_heads
from app.ml.predictor import Predictor
from app.ml.train import (
    CHECKPOINT_DIR,
    CHECKPOINT_NAME,
    MODEL_STATE_NAME,
    TrainConfig,
    train,
)
from app.ml.train_events import (
    EpochEvent,
    ErrorEvent,
    FinishedEvent,
    IterationEvent,
    RegisteredEvent,
    TrainEvent,
)
from app.ml.versions import (
    DEFAULT_MODEL,
    MODELS_DIR,
    active_model,
    register_version,
    set_active_model,
    version_id,
    version_model_id,
)

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


class TrainCommandError(MaskLoopError):
    """The train/evaluate command cannot run as asked."""


# -- train ------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _write_run_file(run: dict[str, Any], ckpt_dir: Path) -> None:
    """Record the run's options for ``--resume``; a failed write names what to do."""
    path = ckpt_dir / RUN_FILE
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(ckpt_dir, {RUN_FILE})
        write_json_atomic(path, run, indent=2)
    except OSError as exc:
        raise TrainCommandError(
            f"Cannot write {path} ({exc.strerror or exc}). Free some disk space (or make the "
            "folder writable) and run again."
        ) from exc


@contextmanager
def _stop_on_ctrl_c() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C: finish the iteration, checkpoint, stop. Second: abort at once."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        tqdm.write(
            "Stopping after this iteration (Ctrl-C again to abort without a checkpoint)...",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _prepare_run(args: argparse.Namespace, store: ProjectStore, ckpt_dir: Path) -> dict[str, Any]:
    """The run's fixed choices: new ones, or those of the interrupted run when resuming."""
    run_file = ckpt_dir / RUN_FILE
    has_checkpoint = (ckpt_dir / CHECKPOINT_NAME).exists()
    if args.resume:
        if not (has_checkpoint and run_file.exists()):
            raise TrainCommandError(
                f"Nothing to resume: no interrupted training run in {ckpt_dir}. "
                "Start one without --resume."
            )
        run = json.loads(run_file.read_text(encoding="utf-8"))
        if args.base_model and args.base_model != run["base_model"]:
            raise TrainCommandError(
                f"The interrupted run started from {run['base_model']}, not {args.base_model}; "
                "resume without --base-model, or start over with --restart."
            )
        return run
    if has_checkpoint and not args.restart:
        raise TrainCommandError(
            f"An interrupted training run is checkpointed in {ckpt_dir}. Continue it with "
            "--resume, or discard it with --restart."
        )
    return {
        "base_model": args.base_model or active_model(store),
        "category_ids": [c.id for c in store.categories()],
        "val_fraction": args.val_fraction,
    }


def _categories(store: ProjectStore, ids: list[int]) -> list[Category]:
    by_id = {c.id: c for c in store.categories()}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise TrainCommandError(
            f"Categories {missing} of the interrupted run were deleted; start over with --restart."
        )
    return [by_id[i] for i in ids]


def _print_metrics(metrics: dict[str, float]) -> None:
    for iou_type in IOU_TYPES:
        parts = "  ".join(
            f"{k}={metrics[ap_key(iou_type, k)]:.3f}"
            for k in AP_NAMES
            if ap_key(iou_type, k) in metrics
        )
        if parts:
            print(f"  {iou_type:4s} {parts}")
    if reviewer_key(REVIEWER_KINDS[0]) in metrics:
        print(
            "  reviewer: {:.0f} accepted as is, {:.0f} to edit, {:.0f} to reject, "
            "{:.0f} missed".format(*(metrics[reviewer_key(kind)] for kind in REVIEWER_KINDS))
        )
    if AREA_RATIO_MEDIAN in metrics:
        print(f"  predicted/true area of matched objects: median {metrics[AREA_RATIO_MEDIAN]:.2f}")
    if MAX_DETS in metrics:
        print(f"  (AP at up to {metrics[MAX_DETS]:.0f} detections per image)")


@dataclass
class _TrainSetup:
    """Everything a run trains and evaluates on, decided before the first step."""

    card: zoo.ModelCard
    model: Any
    categories: list[Category]
    train_ids: list[int]
    val_ids: list[int]
    train_ds: ProjectDataset
    eval_ds: ProjectDataset


def _setup(store: ProjectStore, run: dict[str, Any]) -> _TrainSetup:
    categories = _categories(store, run["category_ids"])
    if not categories:
        raise TrainCommandError(
            "The project has no categories; add one (and annotate with it) before training."
        )
    if "train_ids" in run:
        train_ids, val_ids = run["train_ids"], run["val_ids"]
    else:
        train_ids, val_ids = split_ids(store, run["val_fraction"])
        run.update(train_ids=train_ids, val_ids=val_ids)
    if not train_ids:
        raise TrainCommandError(
            f"No images in {store.root} are marked done. Review some images, mark them "
            "done, then train."
        )
    if not val_ids:
        log.warning(
            "no validation images (only %d done image); the metrics are measured on the "
            "training images and will look better than they are",
            len(train_ids),
        )
    card = model_card(store, run["base_model"])
    model = zoo.load_model(card, device="cpu")
    kept = categories_keeping_heads(card.categories, categories)
    if kept is not None:
        categories = kept  # label k of the model stays the category it was trained as
    else:
        log.info(
            "the project's categories differ from %s's: training new box and mask heads", card.id
        )
        replace_heads(model, len(categories) + 1)
    labels = category_labels([c.id for c in categories])
    return _TrainSetup(
        card=card,
        model=model,
        categories=categories,
        train_ids=train_ids,
        val_ids=val_ids,
        train_ds=ProjectDataset(store, train_ids, labels, card.input, train=True),
        eval_ds=ProjectDataset(store, val_ids or train_ids, labels, card.input, train=False),
    )


def _train_with_progress(
    setup: _TrainSetup,
    config: TrainConfig,
    evaluate_fn: Callable[[Any], dict[str, float]],
    show: bool,
    events_json: bool = False,
) -> tuple[FinishedEvent | None, dict[str, float]]:
    """Run the training generator behind a tqdm bar, or print its events as JSON lines;
    (the finish event, last metrics)."""
    metrics: dict[str, float] = {}
    finished: FinishedEvent | None = None
    with (
        _stop_on_ctrl_c() as should_stop,
        tqdm(unit="it", disable=not show, dynamic_ncols=True) as bar,
    ):
        events = train(
            setup.model, setup.train_ds, config, evaluate_fn=evaluate_fn, should_stop=should_stop
        )
        for event in events:
            if events_json:
                _emit_event(event)
            if isinstance(event, IterationEvent):
                bar.total = event.total_iterations
                bar.n = event.iteration
                bar.set_postfix(
                    epoch=event.epoch + 1, loss=f"{event.loss:.3f}", lr=f"{event.lr:.2e}"
                )
            elif isinstance(event, EpochEvent) and event.metrics:
                metrics = dict(event.metrics)
                if show:
                    bar.write(
                        f"epoch {event.epoch + 1}: segm AP {metrics[SEGM_AP]:.3f} "
                        f"AP50 {metrics[SEGM_AP50]:.3f}"
                    )
            elif isinstance(event, FinishedEvent):
                finished = event
    return finished, metrics


def _emit_event(event: TrainEvent) -> None:
    """One ``--events-json`` line on stdout, flushed at once so a reader sees it live."""
    print(event.to_line(), flush=True)


def run_train(args: argparse.Namespace) -> int:
    if not (args.events_json and _is_main_process()):
        return _run_train(args)
    try:
        return _run_train(args)
    except MaskLoopError as exc:
        _emit_event(ErrorEvent(str(exc)))
        raise
    except KeyboardInterrupt:
        _emit_event(ErrorEvent("Interrupted; nothing was registered."))
        raise
    except Exception as exc:
        _emit_event(ErrorEvent(f"{type(exc).__name__}: {exc}"))
        raise


def _run_train(args: argparse.Namespace) -> int:
    main_process = _is_main_process()
    # With --events-json stdout carries only JSON lines; messages for people go to stderr.
    out = sys.stderr if args.events_json else sys.stdout
    with ProjectStore.open(args.project) as store:
        ckpt_dir = store.root / MODELS_DIR / CHECKPOINT_DIR
        run = _prepare_run(args, store, ckpt_dir)
        setup = _setup(store, run)
        if main_process:
            _write_run_file(run, ckpt_dir)
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            device=args.device,
            num_workers=args.workers,
            seed=args.seed,
            max_iters=args.max_iters,
            checkpoint_dir=ckpt_dir,
            resume=args.resume,
            freeze_bn_stats=not args.update_bn_stats,
        )

        # The version's own card (its categories): validation runs the proposal path.
        trained_card = dataclasses.replace(setup.card, categories=list(setup.categories))

        def evaluate_fn(m: Any) -> dict[str, float]:
            return evaluate_model(
                m,
                trained_card,
                setup.eval_ds.eval_images(),
                device=device_from_arg(args.device),
                max_dets=args.max_dets,
            ).to_metrics()

        if main_process:
            print(
                f"Training {setup.card.id} on {len(setup.train_ids)} images "
                f"({len(setup.val_ids)} held out for validation) on "
                f"{device_from_arg(args.device)}.",
                file=out,
            )
        finished, metrics = _train_with_progress(
            setup,
            config,
            evaluate_fn,
            main_process and not args.events_json,
            args.events_json and main_process,
        )
        if finished is not None and finished.cancelled:
            if main_process:
                print(
                    f"Training stopped at iteration {finished.iterations}; nothing registered. "
                    f"The checkpoint is in {ckpt_dir}. Continue with: "
                    f"maskloop train {args.project} --resume",
                    file=out,
                )
            return 130
        if not main_process:
            return 0
        if not metrics:
            metrics = evaluate_fn(setup.model)
        metrics[VAL_IMAGES] = float(len(setup.val_ids))
        version = register_version(
            store,
            setup.model,
            setup.card,
            parent_id=version_id(setup.card.id),
            categories=setup.categories,
            metrics=metrics,
            images_used=len(setup.train_ids),
            name=args.name,
            recipe={
                "command": "maskloop train",
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "optimizer": args.optimizer,
                "max_iters": args.max_iters,
                "seed": args.seed,
                "iterations": finished.iterations if finished else None,
                "val_fraction": run["val_fraction"],
            },
        )
        for name in (CHECKPOINT_NAME, MODEL_STATE_NAME, RUN_FILE):
            (ckpt_dir / name).unlink(missing_ok=True)
        if not args.no_activate:
            set_active_model(store, version_model_id(version.id))
        print(
            f"Registered model version {version_model_id(version.id)} (from {setup.card.id}, "
            f"{len(setup.train_ids)} images)"
            + (", now the active model." if not args.no_activate else "."),
            file=out,
        )
        if args.events_json:
            _emit_event(RegisteredEvent(version.id, metrics))
        else:
            _print_metrics(metrics)
    return 0


# -- evaluate ---------------------------------------------------------------------------------


def _evaluation_dataset(
    args: argparse.Namespace, store: ProjectStore, card: zoo.ModelCard
) -> CocoFileDataset | ProjectDataset:
    if args.coco is not None:
        root = args.images_root or args.coco.parent
        probe = CocoFileDataset(args.coco, root, spec=card.input, categories_map={})
        mapping = model_labels(card.categories, [Category(i, n) for i, n in probe.categories])
        if not mapping:
            raise TrainCommandError(
                f"None of the categories in {args.coco} ({', '.join(n for _, n in probe.categories)}) "
                f"is one the model predicts ({', '.join(c.name for c in card.categories)})."
            )
        return CocoFileDataset(args.coco, root, spec=card.input, categories_map=mapping)
    train_ids, val_ids = split_ids(store)
    ids = {"val": val_ids, "train": train_ids, "all": sorted(train_ids + val_ids)}[args.split]
    if not ids:
        raise TrainCommandError(
            f"No done images in the {args.split} split of {store.root}. Mark reviewed images "
            "done, or use --split all / --coco FILE."
        )
    mapping = model_labels(card.categories, store.categories())
    if not mapping:
        raise TrainCommandError(
            f"The model predicts categories {[c.name for c in card.categories]}, none of which "
            "is in this project; train a version for the project first."
        )
    return ProjectDataset(store, ids, mapping, card.input, train=False)


def _print_result(model_id: str, result: EvalResult) -> None:
    print(f"{model_id} on {result.images} images, {result.instances} instances:")
    _print_metrics(result.to_metrics())
    for kind, part in result.per_kind.items():
        print(f"{kind}: {part.images} images, {part.instances} instances:")
        _print_metrics(part.to_metrics())


def _evaluate_images(
    args: argparse.Namespace, store: ProjectStore | None, card: zoo.ModelCard
) -> Iterator[EvalImage]:
    if args.labels is not None:
        pairs = find_labelled_images(
            args.images, args.labels, only=args.only, manifest=args.manifest
        )
        return eval_images(pairs)
    if store is None and args.coco is None:
        raise TrainCommandError(
            "Name a PROJECT, or evaluate on a COCO file (--coco) or on label maps "
            "(--images DIR --labels DIR)."
        )
    return _evaluation_dataset(args, store, card).eval_images()


def run_evaluate(args: argparse.Namespace) -> int:
    if (args.images is None) != (args.labels is None):
        raise TrainCommandError("--images and --labels go together: an image folder and its label maps.")
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(ProjectStore.open(args.project)) if args.project else None
        model_id = args.model or (active_model(store) if store is not None else DEFAULT_MODEL)
        card = model_card(store, model_id)
        images = _evaluate_images(args, store, card)
        predictor = Predictor(card, device=args.device, score_threshold=AP_SCORE_FLOOR)
        result = evaluate_predictor(
            predictor, images, max_dets=args.max_dets, proposal_score=args.score
        )
    if args.json:
        print(json.dumps({"model": model_id, **result.to_dict()}, indent=2))
    else:
        _print_result(model_id, result)
    return 0
