"""Assists (app.ml.assist): box -> mask, click -> instance, refine, and their use of the feature cache.

The tiny random-weight model of conftest.py, as in test_predictor. Where a test needs definite masks the mask
logits are biased up (``mask_fcn_logits.bias``), which makes every mask its full box: the
paste convention can then be checked pixel for pixel. The 80x96 image is resized by the
model's transform (min_size 64: scale 0.8), so box coordinates go through that scale.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from app.core.geometry import mask_to_polygons, polygons_bbox, polygons_to_mask
from app.core.types import Instance, Polygon, Source
from app.ml.assist import (
    Assistant,
    AssistError,
    NoObjectFound,
    typical_size,
)
from app.ml.feature_cache import ModelIdentity
from app.ml.models import PROMPT_BOX_MARGIN
from app.ml.predictor import Predictor, masks_in_boxes
from app.ml.preprocess import to_model_input
from app.ml.tiling import Tile, tile_grid


def _biased(model: torch.nn.Module, mask_bias: float) -> torch.nn.Module:
    """A copy whose masks are all whole boxes (bias > 0) or all empty (bias < 0)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(mask_bias)
    return m


@pytest.fixture(scope="module")
def solid(model) -> torch.nn.Module:
    return _biased(model, 8.0)


def _predictor(model, card, **options) -> Predictor:
    return Predictor.from_model(model, card, device="cpu", model_version=3, **options)


@pytest.fixture(scope="module")
def pred(card, model) -> Predictor:
    """Random masks; ``detect`` keeps every detection (up to 20)."""
    return _predictor(model, card, score_threshold=0.0, max_detections=20)


@pytest.fixture(scope="module")
def solid_pred(card, solid) -> Predictor:
    """Whole-box masks; ``predict`` proposes down to the assistant's default floor."""
    return _predictor(solid, card, score_threshold=0.05)


@pytest.fixture
def count_calls():
    """``count_calls(module)``: the input shapes of its forward calls during the test."""
    handles = []

    def count(module: torch.nn.Module) -> list[tuple[int, ...]]:
        calls: list[tuple[int, ...]] = []
        handles.append(
            module.register_forward_hook(lambda _m, a, _o: calls.append(tuple(a[0].shape)))
        )
        return calls

    yield count
    for handle in handles:
        handle.remove()


def _pixels(instance: Instance, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The columns and rows the instance's mask covers."""
    mask = polygons_to_mask(instance.polygons, h, w)
    return np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[Polygon]:
    return [Polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32))]


# -- box -> mask --------------------------------------------------------------------------


def test_a_box_gives_a_mask_filling_exactly_that_box(solid_pred, image) -> None:
    assistant = Assistant(solid_pred, prompt_margin=0.0)
    inst = assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    mask = polygons_to_mask(inst.polygons, 80, 96)
    expected = np.zeros_like(mask)
    expected[12:40, 10:30] = True
    assert np.array_equal(mask, expected)
    assert inst.source is Source.MODEL and inst.model_version == 3
    assert inst.category_id in (7, 9) and 0.0 < inst.score < 1.0
    # Continuous coordinates: a pixel is in when its centre is inside the box.
    inst = assistant.box_to_mask(image, (10.6, 12.4, 30.4, 40.5), image_key="a")
    cols, rows = _pixels(inst, 80, 96)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (11, 29, 12, 39)


def test_the_mask_head_sees_the_box_widened_by_the_prompt_margin(solid_pred, image) -> None:
    """A drag that cuts into the object must still get all of it: the mask is predicted
    over the box widened by the margin each side (as the mask head is trained), while the
    box classifier scores the box as given."""
    exact = Assistant(solid_pred, prompt_margin=0.0)
    wide = Assistant(solid_pred, prompt_margin=PROMPT_BOX_MARGIN)
    box = (20.0, 20.0, 40.0, 50.0)
    raw = wide.box_masks(image, [box], image_key="a")
    m = PROMPT_BOX_MARGIN
    assert raw.boxes[0].tolist() == pytest.approx(
        [20 - 20 * m, 20 - 30 * m, 40 + 20 * m, 50 + 30 * m]
    )
    assert raw.scores[0] == pytest.approx(exact.box_masks(image, [box], image_key="a").scores[0])
    cols, rows = _pixels(wide.box_to_mask(image, box, image_key="a"), 80, 96)
    assert (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1) == (16, 44, 14, 56)
    # Widened boxes stay inside the image.
    (crop,) = masks_in_boxes(wide.box_masks(image, [(0.0, 0.0, 10.0, 10.0)], image_key="a"), 80, 96)
    assert (crop.x0, crop.y0) == (0, 0)
    with pytest.raises(AssistError, match="margin"):
        Assistant(solid_pred, prompt_margin=-0.1)


def test_box_masks_are_the_predictors_masks_for_its_own_detections(pred, image) -> None:
    """Same features, same RoIAlign, same scale: the mask head on a detection's box gives
    the very mask ``predict`` pasted for that detection."""
    (raw,) = pred.detect([to_model_input(image, pred.spec)])
    assert len(raw.scores) >= 5
    ours = Assistant(pred, prompt_margin=0.0).box_masks(
        image, raw.boxes.numpy(), image_key="a", labels=raw.labels
    )
    assert torch.allclose(ours.masks, raw.masks, atol=1e-4)
    assert np.array_equal(ours.labels, raw.labels)
    for a, b in zip(masks_in_boxes(ours, 80, 96), masks_in_boxes(raw, 80, 96), strict=True):
        assert (a.x0, a.y0) == (b.x0, b.y0)
        assert np.count_nonzero(a.mask != b.mask) <= 1  # probabilities within 1e-4 of 0.5


def test_model_category_chooses_the_mask_and_category_labels_the_result(card, pred, image) -> None:
    assistant = Assistant(pred, prompt_margin=0.0)
    box = (20.0, 15.0, 60.0, 55.0)
    raw = assistant.box_masks(image, [box, box], image_key="a", labels=[1, 2])
    assert not torch.allclose(raw.masks[0], raw.masks[1])  # each class has its own mask
    as_cell = assistant.box_to_mask(image, box, image_key="a", model_category_id=9)
    (crop,) = masks_in_boxes(assistant.box_masks(image, [box], image_key="a", labels=[2]), 80, 96)
    assert as_cell.category_id == 9
    assert as_cell.polygons == mask_to_polygons(
        crop.mask, tolerance=pred.polygon_tolerance, min_area=pred.min_area, offset=(20, 15)
    )
    found = assistant.box_to_mask(image, box, image_key="a")
    best = int(assistant.box_masks(image, [box], image_key="a").labels[0])
    assert found.category_id == card.category_for_label(best).id
    # The result's category is the caller's (a project id), the mask the model category's.
    mine = assistant.box_to_mask(image, box, image_key="a", category_id=1, model_category_id=9)
    assert mine.category_id == 1 and mine.polygons == as_cell.polygons
    assert assistant.box_to_mask(image, box, image_key="a", category_id=42).category_id == 42
    with pytest.raises(AssistError, match=r"no category 42; its categories are 7 \(nucleus\)"):
        assistant.box_to_mask(image, box, image_key="a", model_category_id=42)


def test_the_heads_run_on_one_cpu_thread(pred, image) -> None:
    """A few boxes are too little work for two threads (see _one_cpu_thread);
    the process's thread count comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    handle = pred.model.roi_heads.mask_head.register_forward_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    try:
        Assistant(pred).box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        handle.remove()
        torch.set_num_threads(before)


def test_bad_boxes_are_refused_with_a_reason(pred, image) -> None:
    assistant = Assistant(pred)
    with pytest.raises(AssistError, match="no area"):
        assistant.box_to_mask(image, (30.0, 10.0, 30.0, 20.0), image_key="a")
    with pytest.raises(AssistError, match="no area inside"):
        assistant.box_to_mask(image, (100.0, 10.0, 120.0, 20.0), image_key="a")
    with pytest.raises(AssistError, match="labels"):
        assistant.box_masks(image, [(1, 1, 9, 9)], image_key="a", labels=[1, 2])
    with pytest.raises(AssistError, match="labels must be"):
        assistant.box_masks(image, [(1, 1, 9, 9)], image_key="a", labels=[3])


def test_an_empty_mask_is_no_object(card, model, image) -> None:
    assistant = Assistant(_predictor(_biased(model, -8.0), card))
    with pytest.raises(NoObjectFound, match="drag a box closer"):
        assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")


# -- the feature cache --------------------------------------------------------------------


def test_a_cached_image_runs_only_the_heads(pred, image, count_calls) -> None:
    backbone, rpn = count_calls(pred.model.backbone), count_calls(pred.model.rpn)
    masks = count_calls(pred.model.roi_heads.mask_head)
    assistant = Assistant(pred)
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assert len(backbone) == 1
    assistant.box_to_mask(image, (40.0, 30.0, 70.0, 60.0), image_key="a")
    assistant.refine(image, Instance(7, _rect(20, 20, 40, 30)), image_key="a")
    assert (len(backbone), len(rpn), len(masks)) == (1, 0, 3)
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="b")
    assert len(backbone) == 2
    assistant.forget("a")
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assert len(backbone) == 3


def test_the_cache_is_bounded_and_keeps_the_recently_used(pred, image, count_calls) -> None:
    first = Assistant(pred)
    first.prepare(image, image_key="x")
    size = first.cache.nbytes
    assert size > 0 and len(first.cache) == 1
    assistant = Assistant(pred, cache_bytes=int(2.5 * size))
    backbone = count_calls(pred.model.backbone)
    for key in ("a", "b", "a", "c"):  # "a" used again, so "b" is the least recently used
        assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key=key)
        assert assistant.cache.nbytes <= assistant.cache.max_bytes
    assert len(assistant.cache) == 2 and len(backbone) == 3
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="c")
    assert len(backbone) == 3
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="b")
    assert len(backbone) == 4
    # Features larger than the whole cache are used but not kept.
    tiny = Assistant(pred, cache_bytes=size // 2)
    tiny.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assert len(tiny.cache) == 0 and tiny.cache.nbytes == 0


def test_a_model_change_drops_the_cache(card, model, pred, image, count_calls) -> None:
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.backbone.parameters():
            p.mul_(1.5)
    old, new = pred, _predictor(other, card)
    assistant = Assistant(old)
    before = assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assert len(assistant.cache) == 1
    assistant.use(old)  # the same model keeps its features
    assert len(assistant.cache) == 1
    assistant.use(new)
    assert len(assistant.cache) == 0
    backbone = count_calls(new.model.backbone)
    inst = assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assert len(backbone) == 1 and assistant.cache.model == ModelIdentity.of(new)
    fresh = Assistant(new).box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    assert inst.polygons == fresh.polygons != before.polygons


def test_a_key_reused_for_an_image_of_another_size_is_recomputed(solid_pred, image) -> None:
    assistant = Assistant(solid_pred, prompt_margin=0.0)
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    small = np.ascontiguousarray(image[:64, :64])
    inst = assistant.box_to_mask(small, (10.0, 12.0, 30.0, 40.0), image_key="a")
    cols, rows = _pixels(inst, 64, 64)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (10, 29, 12, 39)
    assert len(assistant.cache) == 1


# -- click -> instance --------------------------------------------------------------------


def test_a_click_inside_a_detection_returns_it(solid_pred, image) -> None:
    """The click picks what ``predict`` proposes at the floor score: the best-scoring
    detection whose mask covers the point."""
    proposals = solid_pred.predict(image)
    assert len(proposals) >= 3
    assistant = Assistant(solid_pred, score_floor=0.05)
    for target in proposals[:3]:
        bx, by, bw, bh = polygons_bbox(target.polygons)
        x, y = bx + bw / 2, by + bh / 2
        covering = [p for p in proposals if polygons_to_mask(p.polygons, 80, 96)[int(y), int(x)]]
        got = assistant.click(image, (x, y), image_key="a")
        assert got.polygons == covering[0].polygons and got.score == covering[0].score
        assert got.category_id == covering[0].category_id and got.source is Source.MODEL
        relabelled = assistant.click(image, (x, y), image_key="a", category_id=42)
        assert relabelled.category_id == 42 and relabelled.polygons == got.polygons
        # An object already on the image is not proposed again: the next one is.
        if len(covering) > 1:
            again = assistant.click(image, (x, y), image_key="a", others=[covering[0]])
            assert again.polygons == covering[1].polygons


def test_a_click_on_nothing_prompts_a_box_of_the_typical_size(solid_pred, image) -> None:
    # no detection reaches the floor
    assistant = Assistant(solid_pred, score_floor=1.0, prompt_margin=0.0)
    others = [Instance(7, _rect(0, 0, 10, 16)), Instance(7, _rect(50, 50, 60, 66))]
    assert typical_size(others) == (10.0, 16.0)
    inst = assistant.click(image, (40.0, 30.0), image_key="a", others=others)
    cols, rows = _pixels(inst, 80, 96)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (35, 44, 22, 37)
    inst = assistant.click(image, (40.0, 30.0), image_key="a", box_size=(20.0, 8.0), category_id=9)
    assert inst.category_id == 9
    cols, rows = _pixels(inst, 80, 96)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (30, 49, 26, 33)
    with pytest.raises(NoObjectFound, match="drag a box"):
        assistant.click(image, (40.0, 30.0), image_key="a")
    with pytest.raises(AssistError, match="outside"):
        assistant.click(image, (96.0, 30.0), image_key="a")


def test_a_click_without_sizes_uses_the_detections_sizes(solid_pred, image) -> None:
    """No detection under the point and no instance on the image: the prompt box has the
    median size of the model's detections in the window."""
    (raw,) = solid_pred.detect([to_model_input(image, solid_pred.spec)])  # floor 0.05 too
    boxes = raw.boxes.numpy().astype(np.float64)
    covered = np.zeros((80, 96), np.uint8)
    for crop in masks_in_boxes(raw, 80, 96):
        covered[crop.y0 : crop.y1, crop.x0 : crop.x1] |= crop.mask
    far = cv2.distanceTransform(1 - covered, cv2.DIST_L2, 3)
    row, col = np.unravel_index(int(np.argmax(far)), far.shape)
    x, y = col + 0.5, row + 0.5
    inst = Assistant(solid_pred, prompt_margin=0.0).click(image, (x, y), image_key="a")
    w, h = np.median(boxes[:, 2:] - boxes[:, :2], axis=0)
    x0, x1 = max(x - w / 2, 0), min(x + w / 2, 96)
    y0, y1 = max(y - h / 2, 0), min(y + h / 2, 80)
    centres_x, centres_y = np.arange(96) + 0.5, np.arange(80) + 0.5
    cols, rows = _pixels(inst, 80, 96)
    assert np.array_equal(cols, np.flatnonzero((centres_x > x0) & (centres_x < x1)))
    assert np.array_equal(rows, np.flatnonzero((centres_y > y0) & (centres_y < y1)))


# -- refine -------------------------------------------------------------------------------


def test_refine_keeps_category_and_identity_and_enlarges_the_box(solid_pred, image) -> None:
    assistant = Assistant(solid_pred, prompt_margin=0.0)
    drawn = Instance(42, _rect(20, 20, 40, 30), source=Source.HUMAN, id=5, image_id=3)
    same = assistant.refine(image, drawn, image_key="a")
    assert np.array_equal(
        polygons_to_mask(same.polygons, 80, 96), polygons_to_mask(drawn.polygons, 80, 96)
    )
    out = assistant.refine(image, drawn, image_key="a", enlarge=1.5)
    assert (out.category_id, out.id, out.image_id) == (42, 5, 3)
    cols, rows = _pixels(out, 80, 96)
    # Box (15, 17.5)-(45, 32.5): the pixels whose centres lie inside it (rows 17 and 32 have
    # theirs on the border, where the bilinear paste gives half the probability).
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (15, 44, 18, 31)
    assert out.source is Source.MODEL and out.model_version == 3
    with pytest.raises(AssistError, match="enlarge"):
        assistant.refine(image, drawn, image_key="a", enlarge=0)
    with pytest.raises(AssistError, match="no area"):
        assistant.refine(image, Instance(7, []), image_key="a")


# -- large images -------------------------------------------------------------------------


def test_a_tiled_image_is_seen_through_the_tile_holding_the_box(solid_pred, count_calls) -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 4000, (120, 150), dtype=np.uint16)
    pred = solid_pred  # tile size 96 (the card's max_size), overlap 47
    grid = tile_grid(150, 120, pred.tile_size, pred.tile_overlap)
    assert len(grid) == 6
    backbone = count_calls(pred.model.backbone)
    assistant = Assistant(pred, prompt_margin=0.0)
    inst = assistant.box_to_mask(big, (60.0, 40.0, 80.0, 64.0), image_key="big")
    cols, rows = _pixels(inst, 120, 150)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (60, 79, 40, 63)
    # Of the tiles holding the box, the one with the most margin to an inner tile border.
    ((_, window),) = list(assistant.cache._entries)
    assert (window.x0, window.y0, window.x1, window.y1) == (27, 0, 123, 96)
    assert len(backbone) == 1 and backbone[0][-2:] == (64, 64)  # a 96 px tile, scaled to 64
    # A box larger than the tile overlap fits no tile: a window of its own (here the whole
    # image, downscaled by the model's transform) still pastes onto exactly the box.
    inst = assistant.box_to_mask(big, (20.0, 10.0, 130.0, 100.0), image_key="big")
    cols, rows = _pixels(inst, 120, 150)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (20, 129, 10, 99)
    own = assistant.cache.get(assistant.cache.model, "big", Tile(0, 0, 150, 120))
    assert len(backbone) == 2 and own is not None and own.images.image_sizes == [(64, 80)]
    # prepare() computes the other tiles once; assists then run only the heads.
    assistant.prepare(big, image_key="big")
    assert len(backbone) == 2 + len(grid) - 1
    assistant.click(big, (60.0, 70.0), image_key="big", box_size=(12.0, 12.0))
    # Boxes of several windows in one call come back in their order, as one by one.
    boxes = [(100.0, 80.0, 120.0, 110.0), (5.0, 5.0, 20.0, 20.0), (60.0, 40.0, 80.0, 64.0)]
    together = assistant.box_masks(big, boxes, image_key="big")
    for k, box in enumerate(boxes):
        alone = assistant.box_masks(big, [box], image_key="big")
        assert torch.equal(together.masks[k], alone.masks[0])
        assert together.scores[k] == alone.scores[0]
    assert len(backbone) == 2 + len(grid) - 1


def test_a_box_the_classifier_calls_background_is_no_object(card, solid, image) -> None:
    """The mask head outlines something in any box; below the score floor it is no object."""
    background = copy.deepcopy(solid)
    with torch.no_grad():
        background.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([12.0, -12.0, -12.0]))
    assistant = Assistant(_predictor(background, card))
    with pytest.raises(NoObjectFound, match="sees no object"):
        assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    ok = Assistant(_predictor(solid, card)).box_to_mask(
        image, (10.0, 12.0, 30.0, 40.0), image_key="a"
    )
    assert ok.score is not None and ok.score >= 0.05


# -- features from the proposal pass ------------------------------------------------------


def _same_entries(kept: Assistant, cold: Assistant, key: str, *, exact: bool) -> int:
    """Every cached window of ``kept`` equals ``cold``'s (tensor for tensor, layout too)."""
    model = kept.cache.model
    assert model == cold.cache.model
    windows = [w for k, w in kept.cache._entries if k == key]
    for window in windows:
        a, b = kept.cache.get(model, key, window), cold.cache.get(model, key, window)
        assert a is not None and b is not None
        assert a.image_shape == b.image_shape and a.images.image_sizes == b.images.image_sizes
        assert a.features.keys() == b.features.keys()
        pairs = [(a.images.tensors, b.images.tensors)]
        pairs += [(a.features[n], b.features[n]) for n in a.features]
        for x, y in pairs:
            layout = (x.shape, x.dtype, x.device, x.stride())
            assert layout == (y.shape, y.dtype, y.device, y.stride())
            assert torch.equal(x, y) if exact else torch.allclose(x, y, atol=1e-5)
    return len(windows)


@pytest.mark.parametrize("tiled", [False, True])
def test_a_proposal_pass_caches_the_features_an_assist_computes(
    card, model, image, count_calls, tiled
) -> None:
    options = {"tile_size": 48, "tile_overlap": 16} if tiled else {}
    pred = _predictor(model, card, score_threshold=0.0, **options)
    arr = np.ascontiguousarray(image[..., 0]) * np.uint16(40) if tiled else image
    windows = Assistant(pred)._grid(*arr.shape[:2])
    assert len(windows) == (6 if tiled else 1)
    kept = Assistant(pred)
    backbone = count_calls(pred.model.backbone)
    with kept.keeping_features("img"):
        proposals = pred.predict(arr)
    assert len(backbone) == len(windows) and len(kept.cache) == len(windows)
    # Small enough that each (widened) box lies inside a tile.
    boxes = [(10.0, 12.0, 22.0, 24.0), (55.0, 35.0, 67.0, 47.0), (4.0, 62.0, 16.0, 74.0)]
    warm = kept.box_masks(arr, boxes, image_key="img")
    assert len(backbone) == len(windows)  # the assist ran no backbone
    cold = Assistant(pred)
    fresh = cold.box_masks(arr, boxes, image_key="img")
    cold.prepare(arr, image_key="img")
    assert _same_entries(kept, cold, "img", exact=True) == len(windows)
    assert torch.allclose(warm.masks, fresh.masks) and np.allclose(warm.scores, fresh.scores)
    # Keeping the features changes nothing of the proposals.
    assert [(p.score, p.polygons) for p in pred.predict(arr)] == [
        (p.score, p.polygons) for p in proposals
    ]
    assert pred._sink is None  # the sink ends with the block


def test_after_proposing_the_first_assist_runs_only_the_heads(solid_pred, image, count_calls):
    assistant = Assistant(solid_pred)
    with assistant.keeping_features("a"):
        solid_pred.predict(image)
    backbone = count_calls(solid_pred.model.backbone)
    inst = assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="a")
    refined = assistant.refine(image, inst, image_key="a")
    assert refined.polygons and backbone == []
    assistant.box_to_mask(image, (10.0, 12.0, 30.0, 40.0), image_key="other")
    assert len(backbone) == 1  # another image's features were not kept


def test_batched_tiles_are_kept_as_if_run_alone(card, model, image) -> None:
    """A GPU-style batch of tiles: each window's features are its own copy, close to the
    window run alone (a batched convolution may round differently)."""
    pred = _predictor(model, card, tile_size=48, tile_overlap=16, batch_size=4)
    kept = Assistant(pred)
    with kept.keeping_features("img"):
        pred.predict(image)
    cold = Assistant(pred)
    cold.prepare(image, image_key="img")
    assert _same_entries(kept, cold, "img", exact=False) == 6
    entry = next(iter(kept.cache._entries.values()))
    assert entry.images.tensors.shape[0] == 1
    assert entry.images.tensors.untyped_storage().nbytes() == entry.images.tensors.nbytes
