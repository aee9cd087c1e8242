"""DDP with 2 gloo processes gives the same parameter update as 1 process on both images.

Why the two runs must match: DDP averages the two ranks' gradients, so its update equals the
single-process one exactly when the single-process loss on the combined batch is the mean
of the per-image losses. Mask R-CNN normalises each loss by the number of samples in the
batch, so the model is put in a configuration where every image contributes the same number
of samples and no sampling is random:
- both images have the same target geometry (different pixels), so the RPN labels the same
  anchors, and RPN/RoI batch sizes are huge so every labelled anchor/proposal is used;
- a fixed number of proposals per image (post-NMS top 10) and RoI IoU thresholds of 0.99,
  so the positives are exactly the ground-truth boxes (same count, same mask-loss count);
- BatchNorm is frozen (per-process batch statistics would differ from the combined batch's);
- plain SGD, no momentum, no weight decay, no warm-up, no clipping: one step is lr * grad.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torchvision import tv_tensors
from torchvision.ops.misc import FrozenBatchNorm2d

from app.ml.models import build_model
from app.ml.train import TrainConfig, train

SIZE = 64
LR = 0.05


def _freeze_bn(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_bn(child)


def deterministic_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "maskrcnn_mobilenet_v3_fpn",
        num_classes=2,
        min_size=SIZE,
        max_size=SIZE,
        rpn_batch_size_per_image=100_000,
        rpn_post_nms_top_n_train=10,
        box_batch_size_per_image=100_000,
        box_fg_iou_thresh=0.99,
        box_bg_iou_thresh=0.99,
    )
    _freeze_bn(model)
    return model


def two_images() -> list:
    boxes = torch.tensor([[8.0, 10.0, 30.0, 28.0], [36.0, 30.0, 58.0, 56.0]])
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        m[y0:y1, x0:x1] = 1
    g = torch.Generator().manual_seed(1)
    items = []
    for brightness in (0.6, 0.9):
        image = torch.rand(3, SIZE, SIZE, generator=g) * 0.3 + masks.amax(0) * brightness
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE)),
            "labels": torch.ones(2, dtype=torch.int64),
            "masks": tv_tensors.Mask(masks.clone()),
        }
        items.append((tv_tensors.Image(image.clamp(0, 1)), target))
    return items


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(
        epochs=1,
        batch_size=batch_size,
        lr=LR,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        device="cpu",
        seed=0,
        freeze_bn_stats=False,
    )


def _worker(rank: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    model = deterministic_model()
    events = list(train(model, two_images(), _config(batch_size=1)))
    assert events[-1].iterations == 1
    if rank == 0:
        torch.save(model.state_dict(), out_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_combined_batch(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = deterministic_model()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        list(train(model, two_images(), _config(batch_size=2)))
    finally:
        torch.set_num_threads(threads)
    single_state = model.state_dict()

    moved = 0
    for name, init in initial.items():
        if not init.is_floating_point():
            continue
        single_delta = single_state[name] - init
        ddp_delta = ddp_state[name] - init
        if single_delta.abs().max() > 0:
            moved += 1
        scale = single_delta.norm() + 1e-12
        assert (ddp_delta - single_delta).norm() / scale < 1e-3 or (
            (ddp_delta - single_delta).abs().max() < 1e-7
        ), name
    assert moved > 50  # the step really changed the backbone, RPN and heads
