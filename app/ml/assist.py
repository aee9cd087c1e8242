"""Model-assisted corrections: box -> mask, click -> instance, refine.

Why the detector can do it: Mask R-CNN's mask head segments whatever box it is handed.
RoIAlign pools the box from the image's FPN features and the head predicts the object in
it, so a box a person drags (instead of a detector box) becomes a mask with no second
model. The features do not depend on the box: they are computed once per image window and
cached, and an assist on a cached window runs only the RoI heads (the box classifier for
the category and score, the mask head for the mask), milliseconds instead of a backbone.

Scale: features are computed exactly as :class:`app.ml.predictor.Predictor` computes them
for its proposals, through its model, device and precision. An image that fits the card's
``max_size`` is one window (the model's transform resizes it, as in ``predict``). A larger
image is seen at native scale through the predictor's tile grid, every tile converted with
the image-wide intensity mapping (``global_spec``); a box is pooled from the grid tile that
contains it with the most margin. Tiles overlap by ``tile_overlap`` px, so every box up to
that size (nuclei, cells) lies inside one. A larger box gets a window of its own, centred on
it: ``tile_size`` square, or the box plus ``WINDOW_MARGIN`` each side; a window over
``max_size`` is downscaled by the model's transform, the one case where an assist sees the
image at another scale than the proposals.

A proposal pass computes the same features: run it inside :meth:`Assistant.keeping_features`
and its windows land in the cache (the predictor's :meth:`~app.ml.predictor.Predictor.feature_sink`),
so even the first assist on the image runs no backbone.

Masks are pasted with :func:`app.ml.predictor.masks_in_boxes` (each mask covers exactly its
box, the convention the mask head is trained on) and turned into polygons with the
predictor's tolerance, like any proposal.

Not thread-safe across objects: one :class:`Assistant` serialises its own calls with a lock,
but it runs its predictor's model, so call it from the thread that runs that predictor (the
proposal worker), never from the GUI thread.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torchvision.models.detection.transform import resize_boxes

from app.core.geometry import mask_to_polygons, polygons_bbox, polygons_to_mask_crop
from app.core.types import Instance, Source
from app.errors import MaskLoopError
from app.ml.feature_cache import (
    DEFAULT_CACHE_BYTES,
    FeatureCache,
    FloorDetections,
    ModelIdentity,
    WindowFeatures,
)
from app.ml.models import PROMPT_BOX_MARGIN, widen_boxes
from app.ml.predictor import (
    Predictor,
    RawDetections,
    WindowPass,
    global_spec,
    masks_in_boxes,
)
from app.ml.preprocess import InputSpec, to_model_input
from app.ml.tiling import MaskCrop, Tile, tile_grid

log = logging.getLogger(__name__)

# Detections down to this score are candidates for a click (the AP evaluation's floor).
DEFAULT_SCORE_FLOOR = 0.05
# The refine key (W) re-predicts from the instance's box grown this much.
REFINE_ENLARGE = 1.1
# Context kept each side of a box too large for any tile (it gets a window of its own).
WINDOW_MARGIN = 64
# A detection whose mask overlaps an existing instance this much is that instance.
SAME_OBJECT_IOU = 0.5
# Tiled images whose intensity mapping (global_spec) is kept, most recent first.
_SPECS_KEPT = 32

Box = tuple[float, float, float, float]


class AssistError(MaskLoopError):
    """An assist request that cannot be served as asked (bad box, point or option)."""


class NoObjectFound(AssistError):
    """The model finds no object where the assist asked: the person draws it instead."""


def typical_size(instances: Sequence[Instance]) -> tuple[float, float] | None:
    """Median (width, height) of the instances' boxes, or None without any: the box a click
    on an undetected object is prompted with."""
    sizes = [polygons_bbox(i.polygons)[2:] for i in instances if not i.crowd]
    sizes = [(w, h) for w, h in sizes if w > 0 and h > 0]
    if not sizes:
        return None
    w, h = np.median(np.asarray(sizes, dtype=np.float64), axis=0)
    return float(w), float(h)


class Assistant:
    """Box -> mask, click -> instance and refine with a :class:`Predictor`'s model.

    ``image_key`` (any hashable, e.g. ``(image_id, mtime_ns)``) names the image an assist
    is for; its features are cached under it, so a key must change when the pixels do (or
    call :meth:`forget`). ``cache_bytes`` bounds the cached features; ``score_floor`` is
    the lowest detection score a click may pick. ``prompt_margin``: a given box is widened
    by this share of its size on each side before the mask head sees it, as in training
    (:data:`app.ml.models.PROMPT_BOX_MARGIN`), so a drag that cuts into the object still
    gets all of it; the box classifier scores the box as given.
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        score_floor: float = DEFAULT_SCORE_FLOOR,
        prompt_margin: float = PROMPT_BOX_MARGIN,
    ) -> None:
        if not 0.0 <= score_floor <= 1.0:
            raise AssistError(f"score floor {score_floor} must be between 0 and 1.")
        if not 0.0 <= prompt_margin <= 1.0:
            raise AssistError(f"prompt margin {prompt_margin} must be between 0 and 1.")
        self.score_floor = score_floor
        self.prompt_margin = prompt_margin
        self.cache = FeatureCache(max_bytes=cache_bytes)
        self._lock = threading.RLock()
        self._specs: OrderedDict[Hashable, tuple[tuple[int, int], InputSpec]] = OrderedDict()
        self._predictor = predictor
        self._model = ModelIdentity.of(predictor)

    @property
    def predictor(self) -> Predictor:
        return self._predictor

    def use(self, predictor: Predictor) -> None:
        """Assist with another model from now on; the old model's features are dropped."""
        with self._lock:
            if predictor is self._predictor:
                return
            self._predictor = predictor
            self._model = ModelIdentity.of(predictor)
            self.cache.clear()
            self._specs.clear()

    def forget(self, image_key: Hashable) -> None:
        """Drop an image's cached features (its file changed, or it will not come back)."""
        with self._lock:
            self.cache.forget(image_key)
            self._specs.pop(image_key, None)

    def prepare(self, image: np.ndarray, *, image_key: Hashable) -> None:
        """Compute and cache the features of every window of ``image`` (e.g. when it is
        opened), so that even the first assist on it runs only the heads."""
        with self._lock:
            arr = np.asarray(image)
            h, w = arr.shape[:2]
            for window in self._grid(h, w):
                self._features(arr, image_key, window)

    @contextmanager
    def keeping_features(self, image_key: Hashable) -> Iterator[None]:
        """Within the block, the predictor's predictions are of the image named
        ``image_key`` and their windows' features are cached, exactly as the first assist
        would compute them: a proposal pass run inside makes that assist run only the heads.
        Predict only that image inside (the features would be kept under its key)."""
        with self._predictor.feature_sink(lambda p: self._keep(p, image_key)):
            yield

    # -- the assists ----------------------------------------------------------------------------

    def box_to_mask(
        self,
        image: np.ndarray,
        box: Box,
        *,
        image_key: Hashable,
        category_id: int | None = None,
        model_category_id: int | None = None,
    ) -> Instance:
        """The model's mask for the object in ``box`` (x0, y0, x1, y1, continuous image
        pixels) as a ``source=model`` instance, score = the box classifier's confidence.

        Two id spaces: ``category_id`` is the category the result carries, in the caller's
        ids (e.g. the project's current category); None gives the card category of the
        mask used, as ``predict`` does (map it like proposals, app.ml.propose.CategoryMapper).
        ``model_category_id`` (a category of the card) picks whose mask the head predicts;
        None takes the class the box classifier finds (the only one of a one-class model).
        Raises :class:`NoObjectFound` when the mask is empty or the box classifier's
        confidence is below ``score_floor`` (a box on background).
        """
        with self._lock:
            arr = np.asarray(image)
            label = self._label_of(model_category_id)
            raw = self.box_masks(
                arr, [box], image_key=image_key, labels=None if label is None else [label]
            )
            return self._instance(arr, raw, category_id, min_score=self.score_floor)

    def box_masks(
        self,
        image: np.ndarray,
        boxes: Sequence[Box] | np.ndarray,
        *,
        image_key: Hashable,
        labels: Sequence[int] | np.ndarray | None = None,
    ) -> RawDetections:
        """The heads on many boxes at once (image pixels): the batch form of box -> mask,
        for measuring masks from ground-truth boxes. ``labels`` (model labels, 1-based)
        choose each box's mask; None takes the box classifier's best class. Boxes are
        clipped to the image; the result's boxes are the widened ones the masks were
        predicted over (``prompt_margin``): paste with ``masks_in_boxes(raw, height, width)``.
        """
        with self._lock:
            arr = np.asarray(image)
            h, w = arr.shape[:2]
            b = _checked_boxes(boxes, w, h)
            wide = np.clip(
                widen_boxes(torch.from_numpy(b), self.prompt_margin).numpy(),
                0.0,
                [w, h, w, h],
            )
            want = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
            if want is not None and len(want) != len(b):
                raise AssistError(f"{len(want)} labels for {len(b)} boxes; give one per box.")
            if (
                want is not None
                and ((want < 1) | (want > len(self._predictor.card.categories))).any()
            ):
                raise AssistError(
                    f"labels must be 1..{len(self._predictor.card.categories)} "
                    f"(the model's categories), got {sorted(set(want.tolist()))}."
                )
            grid = self._grid(h, w)
            groups: dict[Tile, list[int]] = {}
            for i, box in enumerate(wide):
                groups.setdefault(
                    _window_for(box, grid, w, h, self._predictor.tile_size), []
                ).append(i)
            masks: torch.Tensor | None = None
            scores = np.zeros(len(b), np.float32)
            out_labels = np.zeros(len(b), np.int64)
            for window, idx in groups.items():
                feats = self._features(arr, image_key, window)
                offset = [window.x0, window.y0, window.x0, window.y0]
                prob, score, label = self._heads(
                    feats,
                    b[idx] - offset,
                    None if want is None else want[idx],
                    mask_boxes=wide[idx] - offset,
                )
                if masks is None:
                    masks = torch.zeros((len(b), *prob.shape[1:]), dtype=torch.float32)
                masks[idx] = prob
                scores[idx], out_labels[idx] = score, label
            assert masks is not None  # b holds at least one box
            return RawDetections(
                boxes=torch.from_numpy(wide).float(), scores=scores, labels=out_labels, masks=masks
            )

    def click(
        self,
        image: np.ndarray,
        point: tuple[float, float],
        *,
        image_key: Hashable,
        others: Sequence[Instance] = (),
        box_size: tuple[float, float] | None = None,
        category_id: int | None = None,
    ) -> Instance:
        """An instance for the object under ``point`` (x, y image pixels).

        The best-scoring detection down to ``score_floor`` whose mask covers the point,
        skipping detections that are one of ``others`` (the image's instances, mask IoU >=
        0.5). Else the mask head prompted with a box centred on the point, of ``box_size``
        (width, height), else of the median size of ``others``, else of the median size of
        the model's detections in the window. ``category_id`` as in :meth:`box_to_mask`
        (the mask is the detection's own, or the box classifier's class). Raises :class:`NoObjectFound` when none gives a
        mask.
        """
        with self._lock:
            arr = np.asarray(image)
            h, w = arr.shape[:2]
            x, y = float(point[0]), float(point[1])
            if not (0 <= x < w and 0 <= y < h):
                raise AssistError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} image.")
            size = box_size or typical_size(others)
            probe = _centred_box(x, y, size or (1.0, 1.0), w, h)
            window = _window_for(probe, self._grid(h, w), w, h, self._predictor.tile_size)
            feats = self._features(arr, image_key, window)
            floor = self._floor(feats)
            found = self._detection_at(arr, feats, floor, x, y, others)
            if found is not None:
                if category_id is not None:
                    found.category_id = category_id
                return found
            if size is None and len(floor.boxes):
                size = tuple(np.median(floor.boxes[:, 2:] - floor.boxes[:, :2], axis=0).tolist())
            if size is None:
                raise NoObjectFound(
                    f"The model finds no object at ({x:.0f}, {y:.0f}) and there is no object "
                    "size to prompt it with; drag a box around the object instead."
                )
            box = tuple(_centred_box(x, y, size, w, h).tolist())
            # No detection reached the floor here: the prompt box is the last resort, so
            # its mask is taken whatever the classifier's confidence.
            raw = self.box_masks(arr, [box], image_key=image_key)
            return self._instance(arr, raw, category_id, min_score=0.0)

    def refine(
        self,
        image: np.ndarray,
        instance: Instance,
        *,
        image_key: Hashable,
        enlarge: float = 1.0,
        model_category_id: int | None = None,
    ) -> Instance:
        """``instance`` with its mask predicted again from its box, scaled ``enlarge``
        times about its centre (e.g. 1.2 when the outline cuts the object). Category, id,
        image and crowd flag are kept; the geometry, score and model are the model's.
        ``model_category_id`` as in :meth:`box_to_mask`."""
        if not enlarge > 0:
            raise AssistError(f"enlarge factor {enlarge} must be above 0 (1 keeps the box).")
        bx, by, bw, bh = polygons_bbox(instance.polygons)
        if bw <= 0 or bh <= 0:
            raise AssistError("the instance has no area to refine; draw it or drag a box.")
        cx, cy = bx + bw / 2, by + bh / 2
        box = (
            cx - bw * enlarge / 2,
            cy - bh * enlarge / 2,
            cx + bw * enlarge / 2,
            cy + bh * enlarge / 2,
        )
        out = self.box_to_mask(
            image,
            box,
            image_key=image_key,
            category_id=instance.category_id,
            model_category_id=model_category_id,
        )
        out.id, out.image_id, out.crowd = instance.id, instance.image_id, instance.crowd
        return out

    # -- helpers ----------------------------------------------------------------------------

    def _grid(self, h: int, w: int) -> list[Tile]:
        """The predictor's windows for an image: itself, or its tile grid."""
        pred = self._predictor
        if max(h, w) <= pred.tile_size:
            return [Tile(0, 0, w, h)]
        return tile_grid(w, h, pred.tile_size, pred.tile_overlap)

    def _label_of(self, model_category_id: int | None) -> int | None:
        """The model label (1-based) of a card category (None for None)."""
        if model_category_id is None:
            return None
        card = self._predictor.card
        ids = [c.id for c in card.categories]
        if model_category_id not in ids:
            names = ", ".join(f"{c.id} ({c.name})" for c in card.categories)
            raise AssistError(
                f"model {card.id} has no category {model_category_id}; its categories are "
                f"{names}. Pass None to let its box classifier choose."
            )
        return ids.index(model_category_id) + 1

    def _spec(self, arr: np.ndarray, image_key: Hashable, window: Tile) -> InputSpec:
        """The predictor's input conversion for a window of ``arr`` (module docstring)."""
        h, w = arr.shape[:2]
        spec = self._predictor.spec
        if window == Tile(0, 0, w, h):
            return spec
        kept = self._specs.get(image_key)
        if kept is not None and kept[0] == (h, w):
            self._specs.move_to_end(image_key)
            return kept[1]
        found = global_spec(arr, spec)
        self._remember_spec(image_key, (h, w), found)
        return found

    def _remember_spec(self, image_key: Hashable, shape: tuple[int, int], spec: InputSpec) -> None:
        self._specs[image_key] = (shape, spec)
        self._specs.move_to_end(image_key)
        while len(self._specs) > _SPECS_KEPT:
            self._specs.popitem(last=False)

    def _keep(self, seen: WindowPass, image_key: Hashable) -> None:
        """Cache a window the predictor ran (see :meth:`keeping_features`)."""
        with self._lock:
            h, w = seen.image_shape
            self.cache.forget(image_key, keep_shape=seen.image_shape)
            if seen.window != Tile(0, 0, w, h):
                self._remember_spec(image_key, seen.image_shape, seen.spec)
            entry = WindowFeatures(seen.window, seen.image_shape, seen.images, seen.features)
            self.cache.put(self._model, image_key, entry)

    def _features(self, arr: np.ndarray, image_key: Hashable, window: Tile) -> WindowFeatures:
        shape = (int(arr.shape[0]), int(arr.shape[1]))
        entry = self.cache.get(self._model, image_key, window)
        if entry is not None and entry.image_shape == shape:
            return entry
        # A miss: if the key named an image of another size before, its windows are stale.
        self.cache.forget(image_key, keep_shape=shape)
        pred = self._predictor
        tensor = to_model_input(
            arr[window.y0 : window.y1, window.x0 : window.x1], self._spec(arr, image_key, window)
        )
        model = pred.model
        with torch.inference_mode():
            images, _ = model.transform([tensor.to(pred.device)])
            x = images.tensors
            if pred.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            features = model.backbone(x)
        entry = WindowFeatures(window, shape, images, features)
        self.cache.put(self._model, image_key, entry)
        log.debug("features of %s window %s: %d bytes", image_key, window, entry.nbytes)
        return entry

    def _heads(
        self,
        feats: WindowFeatures,
        boxes: np.ndarray,
        labels: np.ndarray | None,
        *,
        mask_boxes: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Mask probabilities (N, 1, M, M), scores and labels for boxes in window pixels;
        the masks are over ``mask_boxes`` when given (else over ``boxes``)."""
        heads = self._predictor.model.roi_heads
        sx, sy = feats.scale
        sizes = feats.images.image_sizes
        device = self._predictor.device
        with torch.inference_mode(), _one_cpu_thread(device):
            scaled = torch.from_numpy(boxes * [sx, sy, sx, sy]).float().to(device)
            over = (
                scaled
                if mask_boxes is None
                else torch.from_numpy(mask_boxes * [sx, sy, sx, sy]).float().to(device)
            )
            pooled = heads.box_roi_pool(feats.features, [scaled], sizes)
            class_logits, _ = heads.box_predictor(heads.box_head(pooled))
            probs = torch.softmax(class_logits.float(), -1).cpu()
            if labels is None:
                chosen = probs[:, 1:].argmax(dim=1) + 1
            else:
                chosen = torch.from_numpy(np.asarray(labels, dtype=np.int64))
            rows = torch.arange(len(chosen))
            mask_logits = heads.mask_predictor(
                heads.mask_head(heads.mask_roi_pool(feats.features, [over], sizes))
            )
            masks = mask_logits.float().cpu()[rows, chosen].sigmoid()[:, None]
        return masks, probs[rows, chosen].numpy(), chosen.numpy()

    def _floor(self, feats: WindowFeatures) -> FloorDetections:
        """The window's detections down to the score floor: the model's own RPN, box head
        and NMS, i.e. what ``predict`` would propose at that threshold, without masks."""
        if feats.floor is not None:
            return feats.floor
        model = self._predictor.model
        # A shallow copy shares every layer but has its own score threshold: the
        # predictor's proposal threshold is left alone.
        heads = copy.copy(model.roi_heads)
        heads.score_thresh = self.score_floor
        sizes = feats.images.image_sizes
        with torch.inference_mode():
            proposals, _ = model.rpn(feats.images, feats.features)
            pooled = heads.box_roi_pool(feats.features, proposals, sizes)
            class_logits, regression = heads.box_predictor(heads.box_head(pooled))
            boxes, scores, labels = heads.postprocess_detections(
                class_logits, regression, proposals, sizes
            )
            window_size = (feats.window.height, feats.window.width)
            native = resize_boxes(boxes[0].float(), sizes[0], window_size)
        feats.floor = FloorDetections(
            boxes=native.cpu().numpy().astype(np.float64),
            scores=scores[0].float().cpu().numpy(),
            labels=labels[0].cpu().numpy(),
        )
        return feats.floor

    def _detection_at(
        self,
        arr: np.ndarray,
        feats: WindowFeatures,
        floor: FloorDetections,
        x: float,
        y: float,
        others: Sequence[Instance],
    ) -> Instance | None:
        """The best floor detection whose mask covers pixel (x, y) and is none of ``others``."""
        win = feats.window
        px, py = x - win.x0, y - win.y0
        b = floor.boxes
        inside = np.flatnonzero((b[:, 0] <= px) & (px < b[:, 2]) & (b[:, 1] <= py) & (py < b[:, 3]))
        if not len(inside):
            return None
        order = inside[np.argsort(-floor.scores[inside], kind="stable")]
        masks, _, _ = self._heads(feats, b[order], floor.labels[order])
        h, w = arr.shape[:2]
        col, row = math.floor(x), math.floor(y)
        taken = _OtherMasks(others, h, w)
        for k, i in enumerate(order):
            raw = RawDetections(
                torch.from_numpy(b[i : i + 1]).float(),
                floor.scores[i : i + 1],
                floor.labels[i : i + 1],
                masks[k : k + 1],
            )
            crops = masks_in_boxes(raw, win.height, win.width, offset=(win.x0, win.y0))
            if not crops or not crops[0].window(col, row, col + 1, row + 1).any():
                continue
            if taken.matches(crops[0]):
                continue
            instance = self._crop_instance(crops[0], None)
            if instance is not None:
                return instance
        return None

    def _instance(
        self, arr: np.ndarray, raw: RawDetections, category_id: int | None, *, min_score: float
    ) -> Instance:
        h, w = arr.shape[:2]
        crops = masks_in_boxes(raw, h, w)
        instance = self._crop_instance(crops[0], category_id) if crops else None
        x0, y0, x1, y1 = raw.boxes[0].tolist()
        if instance is None:
            raise NoObjectFound(
                f"The model finds no object in the box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}); "
                "drag a box closer around the object, or draw it."
            )
        # The mask head outlines *something* in any box; the box classifier says whether it
        # is an object (on real nuclei: ~0.99 on a nucleus, under 0.01 on background).
        if instance.score is not None and instance.score < min_score:
            raise NoObjectFound(
                f"The model sees no object in the box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) "
                f"(confidence {instance.score:.3f}); drag a box closer around the object, or "
                "draw it."
            )
        return instance

    def _crop_instance(self, crop: MaskCrop, category_id: int | None) -> Instance | None:
        pred = self._predictor
        polygons = mask_to_polygons(
            crop.mask,
            tolerance=pred.polygon_tolerance,
            min_area=pred.min_area,
            offset=(crop.x0, crop.y0),
        )
        if not polygons:
            return None
        return Instance(
            category_id=pred.card.category_for_label(crop.label).id
            if category_id is None
            else category_id,
            polygons=polygons,
            score=round(float(crop.score), 6),
            source=Source.MODEL,
            model_version=pred.model_version,
        )


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the CPU heads on one thread. On a few boxes they are a few MFLOPs: a second
    OpenMP thread saves nothing, and on a busy 2-core machine (the GUI thread, a training
    run) waiting for it once the scheduler has moved it away made a mask-head convolution
    take up to 150 ms (p95) instead of 3.5 ms. torch's thread count is process-wide: torch
    work on other threads meanwhile also runs on one (the proposal worker, the only other
    torch user in the app, is the thread that calls the assistant)."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _OtherMasks:
    """The image's instances as mask crops, rasterised only when a detection reaches them."""

    def __init__(self, others: Sequence[Instance], height: int, width: int) -> None:
        self._others = list(others)
        self._size = (height, width)
        self._boxes = np.array(
            [polygons_bbox(o.polygons) for o in self._others], dtype=np.float64
        ).reshape(-1, 4)
        self._crops: dict[int, MaskCrop] = {}

    def matches(self, crop: MaskCrop) -> bool:
        """Whether ``crop`` is one of the instances (mask IoU >= SAME_OBJECT_IOU)."""
        b = self._boxes
        near = np.flatnonzero(
            (b[:, 0] < crop.x1)
            & (b[:, 0] + b[:, 2] > crop.x0)
            & (b[:, 1] < crop.y1)
            & (b[:, 1] + b[:, 3] > crop.y0)
        )
        return any(_crop_iou(crop, self._crop(int(i))) >= SAME_OBJECT_IOU for i in near)

    def _crop(self, i: int) -> MaskCrop:
        if i not in self._crops:
            mask, x0, y0 = polygons_to_mask_crop(self._others[i].polygons, *self._size)
            self._crops[i] = MaskCrop(x0, y0, mask, 0.0, 0)
        return self._crops[i]


def _crop_iou(a: MaskCrop, b: MaskCrop) -> float:
    x0, y0 = min(a.x0, b.x0), min(a.y0, b.y0)
    x1, y1 = max(a.x1, b.x1), max(a.y1, b.y1)
    ma, mb = a.window(x0, y0, x1, y1), b.window(x0, y0, x1, y1)
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0


def _checked_boxes(boxes: Sequence[Box] | np.ndarray, width: int, height: int) -> np.ndarray:
    """(N >= 1, 4) float64 boxes clipped to the image; refuses empty or outside boxes."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or not len(b):
        raise AssistError(f"boxes must be (x0, y0, x1, y1) rows, got an array of shape {b.shape}.")
    if not np.isfinite(b).all():
        raise AssistError("box coordinates must be finite numbers.")
    clipped = np.clip(b, 0.0, [width, height, width, height])
    bad = np.flatnonzero((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if len(bad):
        x0, y0, x1, y1 = b[bad[0]].tolist()
        raise AssistError(
            f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area inside the {width}x{height} "
            "image; drag from one corner of the object to the opposite one."
        )
    return clipped


def _centred_box(
    x: float, y: float, size: tuple[float, float], width: int, height: int
) -> np.ndarray:
    bw, bh = float(size[0]), float(size[1])
    if not (bw > 0 and bh > 0):
        raise AssistError(f"box size {size} must be positive (width, height) in pixels.")
    box = np.array([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2])
    return np.clip(box, 0.0, [width, height, width, height])


def _window_for(box: np.ndarray, grid: list[Tile], width: int, height: int, tile_size: int) -> Tile:
    """The grid window holding ``box`` with the most margin to a tile border inside the
    image, else a window of its own centred on the box (module docstring)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    best, best_margin = None, -math.inf
    for t in grid:
        if not (t.x0 <= x0 and t.y0 <= y0 and x1 <= t.x1 and y1 <= t.y1):
            continue
        margins = [
            x0 - t.x0 if t.x0 > 0 else math.inf,
            y0 - t.y0 if t.y0 > 0 else math.inf,
            t.x1 - x1 if t.x1 < width else math.inf,
            t.y1 - y1 if t.y1 < height else math.inf,
        ]
        if min(margins) > best_margin:
            best, best_margin = t, min(margins)
    if best is not None:
        return best
    (wx0, wx1), (wy0, wy1) = _span(x0, x1, width, tile_size), _span(y0, y1, height, tile_size)
    return Tile(wx0, wy0, wx1, wy1)


def _span(lo: float, hi: float, length: int, tile_size: int) -> tuple[int, int]:
    size = min(length, max(tile_size, math.ceil(hi - lo) + 2 * WINDOW_MARGIN))
    start = min(max(round((lo + hi) / 2 - size / 2), 0), length - size)
    return start, start + size
