import json
import math

import pytest
import torch
from torchvision import tv_tensors

from app.errors import MaskLoopError
from app.ml.devices import DeviceError, device_from_arg
from app.ml.models import build_model
from app.ml.train import (
    CHECKPOINT_NAME,
    MODEL_STATE_NAME,
    NonFiniteLossError,
    TrainConfig,
    TrainingError,
    _lr_factor,
    load_checkpoint,
    train,
)
from app.ml.train_events import EpochEvent, FinishedEvent, IterationEvent

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared, busy CPU two threads thrash (10x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyDataset(torch.utils.data.Dataset):
    """Bright rectangles on noise: enough structure for every Mask R-CNN loss."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.items = []
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            image = torch.rand(3, SIZE, SIZE, generator=g) * 0.2
            boxes, masks = [], []
            for _ in range(2):
                x0, y0 = torch.randint(0, SIZE - 24, (2,), generator=g).tolist()
                w, h = torch.randint(10, 22, (2,), generator=g).tolist()
                m = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
                m[y0 : y0 + h, x0 : x0 + w] = 1
                image[:, y0 : y0 + h, x0 : x0 + w] += 0.7
                boxes.append([x0, y0, x0 + w, y0 + h])
                masks.append(m)
            target = {
                "boxes": tv_tensors.BoundingBoxes(
                    torch.tensor(boxes, dtype=torch.float32),
                    format="XYXY",
                    canvas_size=(SIZE, SIZE),
                ),
                "labels": torch.ones(2, dtype=torch.int64),
                "masks": tv_tensors.Mask(torch.stack(masks)),
            }
            self.items.append((tv_tensors.Image(image.clamp(0, 1)), target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(
        "maskrcnn_mobilenet_v3_fpn",
        num_classes=2,
        min_size=SIZE,
        max_size=SIZE,
        detections_per_img=20,
    )


def config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        epochs=1,
        batch_size=2,
        lr=1e-3,
        warmup_iters=1,
        device="cpu",
        seed=3,
        checkpoint_dir=tmp_path,
        freeze_bn_stats=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_runs_iterations_and_writes_files(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen_epochs = []

    def evaluate_fn(m):
        assert not m.training
        seen_epochs.append(True)
        return {"segm_AP50": 0.5}

    events = list(train(model, TinyDataset(4), config(tmp_path), evaluate_fn=evaluate_fn))
    kinds = [type(e) for e in events]
    assert kinds == [IterationEvent, IterationEvent, EpochEvent, FinishedEvent]
    it = events[1]
    assert it.iteration == 2 and it.total_iterations == 2 and math.isfinite(it.loss)
    assert {"loss_mask", "loss_box_reg"} <= set(it.losses) and it.images_per_s > 0
    assert events[2].metrics == {"segm_AP50": 0.5} and seen_epochs == [True]
    assert events[2].checkpoint == tmp_path / CHECKPOINT_NAME
    fin = events[3]
    assert fin.model_state_path == tmp_path / MODEL_STATE_NAME and fin.iterations == 2
    assert not fin.cancelled
    for e in events:  # JSON lines for the GUI subprocess
        json.loads(json.dumps(e.to_dict()))
    state = torch.load(fin.model_state_path, weights_only=True)
    changed = [k for k in state if not torch.equal(state[k], before[k])]
    assert any("mask_predictor" in k for k in changed) and any("backbone" in k for k in changed)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["iteration"] == 2 and ckpt["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_cancel_then_resume_matches_uninterrupted_run(tmp_path):
    data = TinyDataset(4)
    cfg = dict(epochs=2, optimizer="sgd", lr=0.01, warmup_iters=2)

    reference = tiny_model()
    ref_events = list(train(reference, data, config(tmp_path / "a", **cfg)))
    assert ref_events[-1].iterations == 4

    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    first = tiny_model()
    events = list(train(first, data, config(tmp_path / "b", **cfg), should_stop=stop_after_three))
    fin = events[-1]
    assert isinstance(fin, FinishedEvent) and fin.cancelled and fin.model_state_path is None
    assert fin.iterations == 3
    ckpt = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert (ckpt["iteration"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (3, 1, 1)
    assert not (tmp_path / "b" / MODEL_STATE_NAME).exists()

    resumed = tiny_model(seed=99)  # different init: everything must come from the checkpoint
    events = list(train(resumed, data, config(tmp_path / "b", resume=True, **cfg)))
    iters = [e.iteration for e in events if isinstance(e, IterationEvent)]
    assert iters == [4] and events[-1].iterations == 4
    ref_state, res_state = reference.state_dict(), resumed.state_dict()
    for k, v in ref_state.items():
        if v.is_floating_point():
            assert torch.allclose(v, res_state[k], rtol=1e-4, atol=1e-6), k


def test_diverging_run_raises_and_keeps_last_checkpoint(tmp_path):
    data = TinyDataset(4)
    list(train(tiny_model(), data, config(tmp_path, epochs=1)))
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    cfg = config(tmp_path, epochs=2, optimizer="sgd", lr=1e30, warmup_iters=0, clip_grad_norm=None)
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate") as info:
        for _ in train(tiny_model(), data, cfg):
            pass
    assert isinstance(info.value, MaskLoopError)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good


def test_defaults_are_the_fine_tuning_ones():
    """TrainConfig() is what `maskloop train` does: the measured fine-tuning lr, BatchNorm
    statistics kept; from-scratch recipes opt out explicitly."""
    from app.ml.defaults import FINE_TUNE_BATCH_SIZE, FINE_TUNE_EPOCHS, FINE_TUNE_LR

    cfg = TrainConfig()
    assert cfg.lr == FINE_TUNE_LR and cfg.freeze_bn_stats is True
    assert (cfg.epochs, cfg.batch_size) == (FINE_TUNE_EPOCHS, FINE_TUNE_BATCH_SIZE)


def test_max_iters_and_schedules():
    cfg = TrainConfig(warmup_iters=10, lr=1.0)
    f = _lr_factor(cfg, 110)
    assert f(0) == pytest.approx(0.001) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-9)
    step = _lr_factor(TrainConfig(warmup_iters=0, schedule="step"), 100)
    assert [step(0), step(75), step(95)] == pytest.approx([1.0, 0.1, 0.01])


def test_max_iters_stops_mid_epoch(tmp_path):
    events = list(train(tiny_model(), TinyDataset(6), config(tmp_path, epochs=5, max_iters=1)))
    assert [type(e) for e in events] == [IterationEvent, EpochEvent, FinishedEvent]
    assert events[0].total_iterations == 1


@pytest.mark.parametrize(
    "kwargs", [{"optimizer": "lion"}, {"schedule": "poly"}, {"lr": 0.0}, {"epochs": 0}]
)
def test_bad_config_is_a_training_error(kwargs):
    with pytest.raises(TrainingError):
        TrainConfig(**kwargs)


def test_empty_dataset_and_devices(tmp_path):
    with pytest.raises(TrainingError, match="empty"):
        list(train(tiny_model(), TinyDataset(0), config(tmp_path)))
    assert device_from_arg("cpu").type == "cpu"
    assert device_from_arg("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(DeviceError):
        device_from_arg("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            device_from_arg("cuda")


def test_freeze_bn_stats_keeps_running_statistics_but_trains_affine():
    from torch import nn

    def run(freeze: bool):
        model = tiny_model()
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        before = [(bn.running_mean.clone(), bn.weight.detach().clone()) for bn in bns]
        config = TrainConfig(
            epochs=1, batch_size=2, max_iters=2, warmup_iters=1, freeze_bn_stats=freeze
        )
        list(train(model, TinyDataset(4), config))
        stats_same = all(
            torch.equal(b[0], bn.running_mean) for b, bn in zip(before, bns, strict=True)
        )
        affine_moved = any(
            not torch.equal(b[1], bn.weight.detach()) for b, bn in zip(before, bns, strict=True)
        )
        return stats_same, affine_moved

    assert run(freeze=True) == (True, True)
    assert run(freeze=False) == (False, True)  # the test can tell the difference


def test_failed_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    """A full disk while saving stops the run with a TrainingError and leaves no *.tmp."""
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save({"half": torch.zeros(1)}, f)  # part of the file is on disk already
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError, match="No space left on device.*Free some disk space"):
        list(train(tiny_model(), TinyDataset(2), config(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_next_run_removes_temp_files_a_killed_run_left(tmp_path):
    dead_pid = 2**22 + 12345  # above any Linux pid_max: that writer is gone
    left = [
        tmp_path / f".{CHECKPOINT_NAME}.{dead_pid}-0123456789ab.tmp",
        tmp_path / f"{CHECKPOINT_NAME}.tmp",  # the fixed name earlier versions wrote
        tmp_path / f"{MODEL_STATE_NAME}.tmp",
    ]
    for path in left:
        path.write_bytes(b"half a checkpoint")
    list(train(tiny_model(), TinyDataset(2), config(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_NAME, MODEL_STATE_NAME])
