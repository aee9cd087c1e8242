import pytest
import torch

from app.errors import MaskLoopError
from app.ml.models import ARCHITECTURES, ModelBuildError, build_model, replace_heads


def _train_sample(size=64):
    image = torch.rand(3, size, size)
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[0, 10:30, 12:34] = 1
    target = {
        "boxes": torch.tensor([[12.0, 10.0, 34.0, 30.0]]),
        "labels": torch.tensor([1]),
        "masks": masks,
    }
    return image, target


def test_mobile_model_is_light_and_runs_both_modes():
    torch.manual_seed(0)
    model = build_model(
        "maskrcnn_mobilenet_v3_fpn", num_classes=3, min_size=64, max_size=64, detections_per_img=7
    )
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params * 2 < 25e6  # fp16 weights file fits the bundled-model budget
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert model.roi_heads.detections_per_img == 7
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    model.train()
    image, target = _train_sample()
    losses = model([image], [target])
    assert {"loss_mask", "loss_classifier", "loss_objectness"} <= set(losses)
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}


def test_replace_heads_changes_classes_only():
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=64, max_size=64)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    replace_heads(model, 5)
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 20
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 5
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_resnet_architectures_build_offline(arch):
    model = build_model(arch, num_classes=4, min_size=64, max_size=64)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert arch in ARCHITECTURES


def test_errors_are_typed():
    with pytest.raises(ModelBuildError, match="Unknown architecture") as info:
        build_model("yolo", num_classes=2)
    assert isinstance(info.value, MaskLoopError)
    with pytest.raises(ModelBuildError, match="background"):
        build_model("maskrcnn_mobilenet_v3_fpn", num_classes=1)
    with pytest.raises(ModelBuildError, match="no torchvision detection weights"):
        build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, weights="COCO_V1")


def test_fp16_weights_file_loads_back_as_float32(tmp_path):
    """The bundled weights are stored in fp16 to fit 25 MB; loading must cast them back."""
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=64, max_size=64)
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(half, tmp_path / "w.pt")
    again = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=64, max_size=64)
    again.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    for k, v in again.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32
            assert torch.allclose(v, model.state_dict()[k], rtol=1e-3, atol=1e-4), k


def _anchor_labels(model, box: list[float]) -> torch.Tensor:
    """RPN anchor labels (1 positive, 0 negative, -1 ignored) for one 256x256 image."""
    from torchvision.models.detection.image_list import ImageList

    images = ImageList(torch.zeros(1, 3, 256, 256), [(256, 256)])
    features = [torch.zeros(1, 1, 256 // s, 256 // s) for s in (8, 16, 32, 64)]
    anchors = model.rpn.anchor_generator(images, features)
    target = {"boxes": torch.tensor([box]), "labels": torch.ones(1, dtype=torch.int64)}
    labels, _ = model.rpn.assign_targets_to_anchors(anchors, [target])
    return labels[0]


def test_rpn_gives_no_anchor_to_a_box_no_anchor_overlaps():
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=256, max_size=256)
    # A 6x1 sliver on the bottom row, below every anchor: torchvision's own matcher would
    # make every anchor of the image a positive for it.
    sliver = _anchor_labels(model, [138.0, 255.0, 144.0, 256.0])
    assert int((sliver == 1).sum()) == 0
    # An ordinary nucleus still gets its anchors, low-quality best matches included.
    nucleus = _anchor_labels(model, [100.0, 100.0, 118.0, 116.0])
    assert 1 <= int((nucleus == 1).sum()) < 20


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn"])
def test_every_architecture_uses_the_overlap_matcher(arch):
    from app.ml.models import OverlapMatcher

    model = build_model(arch, num_classes=2)
    assert isinstance(model.rpn.proposal_matcher, OverlapMatcher)


def test_loose_boxes_move_each_side_by_at_most_the_jitter_then_widen():
    from app.ml.models import loose_boxes, widen_boxes

    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]]).repeat(2000, 1)
    size = torch.tensor([20.0, 40.0, 20.0, 40.0])
    gen = torch.Generator().manual_seed(0)
    moved = loose_boxes(boxes, jitter=0.15, margin=0.0, generator=gen)
    shift = (moved - boxes) / size
    assert shift.abs().max() <= 0.15 and shift.abs().max() > 0.14
    assert shift.mean(0).abs().max() < 0.01  # as often inward as outward
    assert torch.equal(loose_boxes(boxes[:1], jitter=0.0, margin=0.2), widen_boxes(boxes[:1], 0.2))
    assert widen_boxes(boxes[:1], 0.2).tolist() == [[6.0, 12.0, 34.0, 68.0]]


def test_training_adds_the_loose_box_mask_loss_and_prediction_is_unchanged():
    """Every MaskLoop model also learns masks from loose, drag-like boxes (the assists'
    prompts); the loss trains the mask head, and in eval mode nothing changes."""
    torch.manual_seed(0)
    model = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=64, max_size=64)
    model.train()
    image, target = _train_sample()
    losses = model([image], [target])
    assert float(losses["loss_mask_loose"].detach()) > 0
    losses["loss_mask_loose"].backward()
    head = model.roi_heads.mask_head[0][0].weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    assert model.backbone.body["0"][0].weight.grad.abs().sum() > 0  # features learn too
    model.eval()
    with torch.no_grad():
        a = model([image])[0]
        for h in list(model.roi_heads._forward_hooks):
            del model.roi_heads._forward_hooks[h]
        b = model([image])[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # An image without objects gives a zero loose-box loss, not an error.
    model.train()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros((0, 64, 64), dtype=torch.uint8)}
    fresh = build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, min_size=64, max_size=64)
    assert float(fresh.train()([image], [empty])["loss_mask_loose"].detach()) == 0.0
