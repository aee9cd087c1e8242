"""Training as a generator of progress events.

The CLI renders the events (:mod:`app.ml.train_events`) with tqdm, the GUI reads them as
JSON lines from a subprocess; both share this loop. The same call scales from one CPU to a
multi-GPU node: under ``torchrun`` (WORLD_SIZE > 1) it wraps the model in
DistributedDataParallel, splits the data with a DistributedSampler and only rank 0 writes
files.

Resuming is exact: the checkpoint holds the model, optimizer, scheduler, AMP scaler, the
position in the epoch and every RNG state, the data order of an epoch is a pure function of
(seed, epoch), and the loader has its own generator, so an interrupted and resumed run
matches an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from app.core.atomic import remove_stale_temps, write_atomic
from app.errors import MaskLoopError
from app.ml.defaults import (
    FINE_TUNE_BATCH_SIZE,
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LR,
    OPTIMIZERS,
    SCHEDULES,
)
from app.ml.devices import device_from_arg
from app.ml.models import set_training_iteration
from app.ml.train_events import EpochEvent, FinishedEvent, IterationEvent, RunEvent

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
# Where `maskloop train` keeps an interrupted run, under PROJECT/models/.
CHECKPOINT_DIR = "checkpoints"
MODEL_STATE_NAME = "model.pt"
# "step" divides the learning rate by 10 at these fractions of the run (torchvision's
# detection recipe uses epochs 16 and 22 of 26).
STEP_MILESTONES = (0.7, 0.9)
WARMUP_START_FACTOR = 0.001


class TrainingError(MaskLoopError):
    """Training cannot start or cannot go on."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite: the run diverged."""


@dataclass
class TrainConfig:
    """Options of one training run. ``batch_size`` is per process (per GPU under torchrun)."""

    epochs: int = FINE_TUNE_EPOCHS
    batch_size: int = FINE_TUNE_BATCH_SIZE
    lr: float = FINE_TUNE_LR
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_iters: int = 50
    clip_grad_norm: float | None = 10.0
    amp: bool | None = None
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    max_iters: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    # Fine-tuning a trained model on a few images: batches of 2-4 would overwrite the
    # BatchNorm running statistics it learned, so keep them (the affine weights still train).
    # Training from scratch or on a large new data set passes False.
    freeze_bn_stats: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(
                f"optimizer={self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}."
            )
        if self.schedule not in SCHEDULES:
            raise TrainingError(
                f"schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}."
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError("epochs and batch_size must be at least 1.")
        if not self.lr > 0:
            raise TrainingError(f"lr={self.lr}: the learning rate must be positive.")
        if self.max_iters is not None and self.max_iters < 1:
            raise TrainingError("max_iters must be at least 1 (or None for all epochs).")
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)


def collate(batch: list[tuple[Any, Any]]) -> tuple[tuple[Any, ...], ...]:
    """Detection batches are lists of differently sized images: no stacking."""
    return tuple(zip(*batch, strict=True))


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_arg: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed.")
    owns = False
    if not dist.is_initialized():
        use_cuda = device_arg != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        owns_group=owns,
    )


def _lr_factor(config: TrainConfig, total: int) -> Callable[[int], float]:
    warmup = max(0, min(config.warmup_iters, total - 1))

    def factor(it: int) -> float:
        if it < warmup:
            alpha = it / warmup
            return WARMUP_START_FACTOR * (1 - alpha) + alpha
        span = max(1, total - warmup)
        progress = min(1.0, (it - warmup) / span)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 0.1 ** sum(progress >= m for m in STEP_MILESTONES)

    return factor


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norm layers and biases: decaying them only hurts.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def _amp_settings(config: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """(autocast on, autocast dtype, GradScaler on). AMP is only used on CUDA."""
    enabled = device.type == "cuda" if config.amp is None else config.amp
    if enabled and device.type != "cuda":
        log.warning("AMP is only used on CUDA; training in float32 on %s", device)
        enabled = False
    if not enabled:
        return False, torch.float32, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def _plain(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """tv_tensors -> plain tensors on ``device`` (the model needs no metadata)."""
    return t.as_subclass(torch.Tensor).to(device, non_blocking=True)


def _to_device(images: tuple, targets: tuple, device: torch.device) -> tuple[list, list]:
    imgs = [_plain(im, device) for im in images]
    tgts = []
    for t in targets:
        moved = {k: _plain(v, device) if torch.is_tensor(v) else v for k, v in t.items()}
        boxes = moved.get("boxes")
        if boxes is not None and boxes.numel():
            # Zero-area boxes (an instance cropped away by augmentation) make torchvision
            # raise; dropping them keeps a long run alive.
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not bool(keep.all()):
                moved = {
                    k: v[keep] if torch.is_tensor(v) and v.shape[:1] == keep.shape else v
                    for k, v in moved.items()
                }
        tgts.append(moved)
    return imgs, tgts


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :mod:`app.core.atomic`: a failed write leaves no temp file.

    The previous file stays as it was, so a run stopped by a full disk resumes from it.
    """

    def save(tmp: Path) -> None:
        # A file object, not the path: torch's own writer turns ENOSPC into a RuntimeError.
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save)
    except OSError as exc:
        raise TrainingError(
            f"Cannot write {path} ({exc.strerror or exc}). Free some disk space (or make the "
            "folder writable) and run again; the last good checkpoint was kept."
        ) from exc


def _remove_stale_checkpoint_temps(folder: Path) -> None:
    """Delete the temporary checkpoint files that killed runs left in ``folder``.

    Those of dead writers (see :func:`app.core.atomic.remove_stale_temps`) and the fixed
    ``<name>.tmp`` names that versions before the shared helper wrote.
    """
    names = (CHECKPOINT_NAME, MODEL_STATE_NAME)
    remove_stale_temps(folder, names)
    for name in names:
        legacy = folder / f"{name}.tmp"
        if legacy.is_file():
            legacy.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted run", legacy)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain values only: weights_only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"Cannot read the checkpoint {path} ({exc}). Delete it to start over."
        ) from exc


class _Loop:
    """State of one run; ``train`` drives it. Kept private: the generator is the API."""

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        config: TrainConfig,
        dctx: _Dist,
    ) -> None:
        self.config = config
        self.dctx = dctx
        device = device_from_arg(config.device)
        if dctx.enabled and device.type == "cuda":
            device = torch.device("cuda", dctx.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.model = model.to(device)
        if device.type == "cpu":
            # oneDNN's convolutions (forward and backward) are faster on NHWC weights: ~5% per
            # iteration on this model. The state dict keeps the same values and shapes.
            self.model.to(memory_format=torch.channels_last)
        self.autocast, self.amp_dtype, use_scaler = _amp_settings(config, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.net: nn.Module = model
        if dctx.enabled:
            if device.type == "cuda":
                # Batch statistics from one or two images per GPU are noise; share them.
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.dataset = dataset
        self.sampler = DistributedSampler(
            dataset,
            num_replicas=dctx.world_size,
            rank=dctx.rank,
            shuffle=True,
            seed=config.seed,
        )
        self.iters_per_epoch = math.ceil(len(self.sampler) / config.batch_size)
        if self.iters_per_epoch == 0:
            raise TrainingError("The training set is empty: mark some images done first.")
        total = config.epochs * self.iters_per_epoch
        self.total = min(total, config.max_iters) if config.max_iters else total
        self.optimizer = _make_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_factor(config, self.total)
        )
        self.iteration = 0
        self.epoch = 0
        self.batch_in_epoch = 0

    @property
    def checkpoint_path(self) -> Path | None:
        d = self.config.checkpoint_dir
        return d / CHECKPOINT_NAME if d is not None else None

    def save_checkpoint(self) -> Path | None:
        path = self.checkpoint_path
        if path is None:
            return None
        if self.dctx.is_main:
            _atomic_save(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "epoch": self.epoch,
                    "batch_in_epoch": self.batch_in_epoch,
                    "iteration": self.iteration,
                    "total_iterations": self.total,
                    "rng": _rng_state(),
                },
                path,
            )
        self.barrier()
        return path

    def restore(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            log.warning("resume asked for but no checkpoint at %s; starting from scratch", path)
            return
        ckpt = load_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.iteration = int(ckpt["iteration"])
        if int(ckpt["total_iterations"]) != self.total:
            log.warning(
                "checkpoint was made for %d iterations, this run has %d; the schedule follows this run",
                ckpt["total_iterations"],
                self.total,
            )
        _set_rng_state(ckpt["rng"])
        if self.dctx.rank:
            _seed_all(self.config.seed + 7919 * self.dctx.rank + self.iteration)
        log.info("resumed from %s at iteration %d (epoch %d)", path, self.iteration, self.epoch)

    def barrier(self) -> None:
        if self.dctx.enabled:
            dist.barrier()

    def loader(self) -> DataLoader:
        """This epoch's batches, skipping those a resumed run has already done."""
        self.sampler.set_epoch(self.epoch)
        indices = list(self.sampler)[self.batch_in_epoch * self.config.batch_size :]
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + self.epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=indices,
            num_workers=self.config.num_workers,
            collate_fn=collate,
            generator=gen,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def agree(self, nonfinite: bool, stop: bool) -> tuple[bool, bool]:
        """Every rank must take the same branch, or the others hang in the next all-reduce."""
        if not self.dctx.enabled:
            return nonfinite, stop
        flags = torch.tensor([float(nonfinite), float(stop)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def step(
        self, images: tuple, targets: tuple
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
        imgs, tgts = _to_device(images, targets, self.device)
        set_training_iteration(self.model, self.iteration)
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.autocast
            else nullcontext()
        )
        with ctx:
            losses = self.net(imgs, tgts)
        loss = sum(losses.values())
        nonfinite, _ = self.agree(not bool(torch.isfinite(loss)), False)
        if nonfinite:
            return loss, losses, False
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss, losses, True


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[RunEvent]:
    """Train ``model`` in place on ``dataset``, yielding progress events.

    Dataset items are ``(image float32 (3, H, W) in [0, 1], target)`` with target keys
    boxes (XYXY), labels (int64) and masks (uint8 N, H, W). ``evaluate_fn`` runs on rank 0
    after each epoch on the unwrapped model in eval mode. ``should_stop`` is polled before
    each iteration; a stop saves a checkpoint (when ``checkpoint_dir`` is set) and ends with
    ``FinishedEvent(cancelled=True)``. A NaN/inf loss raises ``NonFiniteLossError`` and keeps
    the last good checkpoint.
    """
    dctx = _init_distributed(config.device)
    try:
        loop = _Loop(model, dataset, config, dctx)
        if config.checkpoint_dir is not None and dctx.is_main:
            _remove_stale_checkpoint_temps(config.checkpoint_dir)
        if config.resume:
            loop.restore()
        else:
            _seed_all(config.seed + dctx.rank)
        yield from _run(loop, evaluate_fn, should_stop)
    finally:
        if dctx.owns_group:
            dist.destroy_process_group()


def _train_mode(loop: _Loop) -> None:
    loop.net.train()
    if loop.config.freeze_bn_stats:
        for module in loop.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _run(
    loop: _Loop,
    evaluate_fn: Callable[[nn.Module], dict[str, float]] | None,
    should_stop: Callable[[], bool] | None,
) -> Iterator[RunEvent]:
    config = loop.config
    images_per_iter = config.batch_size * loop.dctx.world_size
    avg_iter_s: float | None = None
    _train_mode(loop)
    while loop.iteration < loop.total and loop.epoch < config.epochs:
        for images, targets in loop.loader():
            _, stop = loop.agree(False, bool(should_stop and should_stop()))
            if stop:
                path = loop.save_checkpoint()
                log.info("training stopped at iteration %d; checkpoint %s", loop.iteration, path)
                yield FinishedEvent(None, loop.iteration, cancelled=True)
                return
            t0 = time.perf_counter()
            lr = loop.optimizer.param_groups[0]["lr"]
            loss, losses, ok = loop.step(images, targets)
            if not ok:
                parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                raise NonFiniteLossError(
                    f"The training loss became {float(loss.detach())} at iteration {loop.iteration + 1} "
                    f"(epoch {loop.epoch + 1}; {parts}). Lower the learning rate (it was "
                    f"{lr:.3g}), keep gradient clipping on, or check the annotations for "
                    "broken masks. The last good checkpoint was kept."
                )
            loop.iteration += 1
            loop.batch_in_epoch += 1
            dt = time.perf_counter() - t0
            avg_iter_s = dt if avg_iter_s is None else 0.9 * avg_iter_s + 0.1 * dt
            yield IterationEvent(
                epoch=loop.epoch,
                iteration=loop.iteration,
                total_iterations=loop.total,
                loss=float(loss.detach()),
                losses={k: float(v.detach()) for k, v in losses.items()},
                lr=lr,
                images_per_s=images_per_iter / dt if dt > 0 else 0.0,
                eta_s=avg_iter_s * (loop.total - loop.iteration),
            )
            if loop.iteration >= loop.total:
                break
        finished_epoch = loop.epoch
        if loop.batch_in_epoch >= loop.iters_per_epoch:
            loop.epoch += 1
            loop.batch_in_epoch = 0
        checkpoint = loop.save_checkpoint()
        metrics: dict[str, float] = {}
        if evaluate_fn is not None and loop.dctx.is_main:
            loop.model.eval()
            with torch.no_grad():
                metrics = dict(evaluate_fn(loop.model))
            _train_mode(loop)
        loop.barrier()
        yield EpochEvent(epoch=finished_epoch, checkpoint=checkpoint, metrics=metrics)
    state_path = None
    if config.checkpoint_dir is not None:
        state_path = config.checkpoint_dir / MODEL_STATE_NAME
        if loop.dctx.is_main:
            _atomic_save(loop.model.state_dict(), state_path)
        loop.barrier()
    yield FinishedEvent(state_path, loop.iteration)
