"""Annotated images -> torchvision detection samples for training and evaluation.

Two sources: the project store (images marked done) and a COCO file written by another
tool. Both yield ``(tv_tensors.Image float32 (3, H, W) in [0, 1], target)`` with target
``boxes`` (XYXY ``BoundingBoxes``), ``labels`` (int64) and ``masks`` (uint8 ``Mask``
(N, H, W)); images go through ``preprocess.to_model_input``, the one conversion the
Predictor uses too, so a model sees the same pixels in training and in use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import boxes as box_ops

from app.core.geometry import GeometryError, polygons_to_mask, rle_decode
from app.core.images import read_image
from app.core.interchange import resolve_inside, safe_relative_name
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Polygon
from app.errors import MaskLoopError
from app.ml.evaluate import EvalImage
from app.ml.preprocess import InputSpec, to_model_input

log = logging.getLogger(__name__)

Sample = tuple[tv_tensors.Image, dict[str, torch.Tensor]]


class DatasetError(MaskLoopError):
    """Annotations cannot be turned into training samples (missing data, unsafe paths...)."""


# -- train/val split ----------------------------------------------------------------------


def split_score(path: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by the image's relative path: its place in the split."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_ids(
    store: ProjectStore, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(train ids, val ids) of the done images; new assignments are saved in the store.

    An image keeps the split it was given once (a model is never evaluated on an image it
    trained on); a done image without one goes to val when ``split_score(path, seed) <
    val_fraction``. That depends on the path only, so adding images never moves others.
    When this leaves val empty although two or more images are done, the newly assigned
    image with the lowest score goes to val so that small projects are still evaluated on
    held-out data; likewise train is never left empty by a new assignment.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction={val_fraction}; it must be in [0, 1).")
    done = store.images(status=ImageStatus.DONE)
    split = {rec.id: rec.split for rec in done}
    new = sorted(
        (rec for rec in done if rec.split is None), key=lambda r: split_score(r.path, seed)
    )
    for rec in new:
        split[rec.id] = "val" if split_score(rec.path, seed) < val_fraction else "train"
    if val_fraction > 0 and new and len(done) >= 2 and "val" not in split.values():
        split[new[0].id] = "val"
    if new and "train" not in split.values():
        split[new[-1].id] = "train"
    if new:
        with store.transaction():
            for rec in new:
                store.set_split(rec.id, split[rec.id])
        log.info("assigned %d newly done images to the train/val split", len(new))
    train = [rec.id for rec in done if split[rec.id] == "train"]
    val = [rec.id for rec in done if split[rec.id] == "val"]
    return train, val


def category_labels(category_ids: Sequence[int]) -> dict[int, int]:
    """Category id -> model label (1-based, in the given order; 0 is the background)."""
    return {cid: k for k, cid in enumerate(category_ids, start=1)}


# -- masks, boxes, augmentation ---------------------------------------------------------------


def _bounds(polygons: Sequence[Polygon]) -> tuple[float, float, float, float]:
    points = np.concatenate([p.exterior for p in polygons])
    return (
        float(points[:, 0].min()),
        float(points[:, 1].min()),
        float(points[:, 0].max()),
        float(points[:, 1].max()),
    )


def _scaled_shifted(polygons: Sequence[Polygon], scale: float, dx: int, dy: int) -> list[Polygon]:
    offset = np.array([dx, dy], dtype=np.float32)
    return [
        Polygon(p.exterior * scale - offset, [h * scale - offset for h in p.holes])
        for p in polygons
    ]


def rasterize(
    instances: Sequence[Sequence[Polygon]], height: int, width: int, scale: float = 1.0
) -> np.ndarray:
    """(N, height, width) uint8 masks of the instances' polygons scaled by ``scale``.

    Each instance is filled only inside its bounding box (its polygons shifted by whole
    pixels into a box-sized geometry.polygons_to_mask), which gives the pixels of a
    full-image fill at a fraction of the cost.
    """
    masks = np.zeros((len(instances), height, width), dtype=np.uint8)
    for k, polygons in enumerate(instances):
        polygons = [p for p in polygons if len(p.exterior) >= 3]
        if not polygons:
            continue
        x0, y0, x1, y1 = (v * scale for v in _bounds(polygons))
        left, top = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
        right, bottom = min(width, math.ceil(x1) + 2), min(height, math.ceil(y1) + 2)
        if right <= left or bottom <= top:
            continue
        local = _scaled_shifted(polygons, scale, left, top)
        masks[k, top:bottom, left:right] = polygons_to_mask(local, bottom - top, right - left)
    return masks


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of non-empty masks in MaskLoop's convention, [first pixel, last pixel
    + 1] (like COCO's bbox); torchvision's ``masks_to_boxes`` ends at the last pixel."""
    return box_ops.masks_to_boxes(masks) + masks.new_tensor([0, 0, 1, 1], dtype=torch.float32)


def make_sample(
    image: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    iscrowd: torch.Tensor | None = None,
) -> Sample:
    """Wrap tensors as tv_tensors; empty masks are dropped and boxes follow the masks."""
    keep = masks.flatten(1).bool().any(dim=1) if masks.numel() else torch.zeros(0, dtype=torch.bool)
    masks, labels = masks[keep], labels[keep]
    size = (int(image.shape[-2]), int(image.shape[-1]))
    target: dict[str, torch.Tensor] = {
        "boxes": tv_tensors.BoundingBoxes(
            masks_to_boxes(masks), format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=size
        ),
        "labels": labels.to(torch.int64),
        "masks": tv_tensors.Mask(masks.to(torch.uint8)),
    }
    if iscrowd is not None:
        target["iscrowd"] = iscrowd[keep].to(torch.int64)
    return tv_tensors.Image(image), target


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation. Zoom in (crop) and out (pad) change the object scale the
    model sees after its own resize; photometric jitter covers staining and exposure."""

    flip: bool = True
    crop_p: float = 0.5
    crop_scale: tuple[float, float] = (0.3, 1.0)
    zoom_out_p: float = 0.2
    zoom_out_side: tuple[float, float] = (1.0, 1.6)
    brightness: float = 0.3
    contrast: float = 0.3
    blur_p: float = 0.2
    noise_p: float = 0.3
    noise_sigma: float = 0.02

    def transform(self, height: int, width: int) -> v2.Transform:
        steps: list[v2.Transform] = []
        if self.flip:
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
        if self.crop_p > 0:
            crop = v2.RandomResizedCrop((height, width), scale=self.crop_scale, antialias=True)
            steps.append(v2.RandomApply([crop], p=self.crop_p))
        if self.zoom_out_p > 0:
            steps.append(v2.RandomZoomOut(fill=0, side_range=self.zoom_out_side, p=self.zoom_out_p))
        if self.brightness or self.contrast:
            steps.append(v2.ColorJitter(brightness=self.brightness, contrast=self.contrast))
        if self.blur_p > 0:
            steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.2))], p=self.blur_p))
        if self.noise_p > 0:
            steps.append(v2.RandomApply([v2.GaussianNoise(sigma=self.noise_sigma)], p=self.noise_p))
        return v2.Compose(steps) if steps else v2.Identity()


_SANITIZE = v2.SanitizeBoundingBoxes(min_size=1.0)


def augment(sample: Sample, augmentation: Augmentation) -> Sample:
    """Apply ``augmentation`` keeping image, masks and boxes consistent.

    Boxes are recomputed from the transformed masks (a crop can cut a box while the mask
    has no pixel left in it), then SanitizeBoundingBoxes drops degenerate instances.
    """
    image, target = sample
    out_image, out_target = augmentation.transform(*image.shape[-2:])(image, target)
    tight = make_sample(
        out_image.as_subclass(torch.Tensor).clamp_(0.0, 1.0),
        out_target["masks"].as_subclass(torch.Tensor),
        out_target["labels"],
        out_target.get("iscrowd"),
    )
    return _SANITIZE(*tight)


def model_scale(height: int, width: int, spec: InputSpec) -> float:
    """The factor the model's own transform (GeneralizedRCNNTransform) resizes by."""
    scale = spec.min_size / min(height, width)
    if max(height, width) * scale > spec.max_size:
        scale = spec.max_size / max(height, width)
    return scale


def _shrunk_size(height: int, width: int, spec: InputSpec) -> tuple[int, int, float]:
    scale = model_scale(height, width, spec)
    if scale >= 1.0:
        return height, width, 1.0
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def _resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(
        image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )[0]


# -- datasets -------------------------------------------------------------------------------


@dataclass
class _Item:
    path: Path
    width: int
    height: int
    labels: list[int] = field(default_factory=list)
    shapes: list[Any] = field(default_factory=list)  # polygons or COCO segmentation
    iscrowd: list[int] = field(default_factory=list)


class _DetectionDataset(Dataset, ABC):
    """Common loading: read, convert with the model's InputSpec, shrink, augment.

    For training, large images are shrunk to the size the model would resize them to
    anyway before the masks are made: N full-size masks of a 4k image would not fit in
    memory and cost time in every augmentation. Evaluation keeps the original size.
    """

    def __init__(
        self, items: list[_Item], spec: InputSpec, train: bool, augmentation: Augmentation | None
    ) -> None:
        self.items = items
        self.spec = spec
        self.train = train
        self.augmentation = (augmentation or Augmentation()) if train else None

    def __len__(self) -> int:
        return len(self.items)

    @abstractmethod
    def _masks(self, item: _Item, height: int, width: int, scale: float) -> np.ndarray:
        """(N, height, width) uint8 masks of ``item`` at ``scale`` of its original size."""

    def eval_images(self) -> Iterator[EvalImage]:
        """The images as evaluation sees them: raw pixels for the Predictor, truth masks at
        full size (model labels), crowd flags; one image in memory at a time."""
        for item in self.items:
            array = self._read(item)
            masks = self._masks(item, item.height, item.width, 1.0)
            yield EvalImage.from_masks(
                array, masks, item.labels, item.iscrowd, name=item.path.name
            )

    def _read(self, item: _Item) -> np.ndarray:
        array = read_image(item.path)
        if array.shape[:2] != (item.height, item.width):
            raise DatasetError(
                f"{item.path} is {array.shape[1]}x{array.shape[0]} pixels but was annotated "
                f"as {item.width}x{item.height}; the file changed since. Restore it or "
                "rescan the project and re-annotate the image."
            )
        return array

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        image = to_model_input(self._read(item), self.spec)
        height, width, scale = item.height, item.width, 1.0
        if self.train:
            height, width, scale = _shrunk_size(item.height, item.width, self.spec)
            image = _resize_image(image, height, width)
        masks = torch.from_numpy(self._masks(item, height, width, scale))
        labels = torch.tensor(item.labels, dtype=torch.int64)
        crowd = None if self.train else torch.tensor(item.iscrowd, dtype=torch.int64)
        sample = make_sample(image, masks, labels, crowd)
        if self.augmentation is not None:
            sample = augment(sample, self.augmentation)
        return sample


class ProjectDataset(_DetectionDataset):
    """Samples of project images; ``categories_map`` maps category id -> model label.

    The images' annotations are read from the store once, here: items then need no
    database connection, so the dataset works in DataLoader workers and under torchrun.
    Instances of categories missing from ``categories_map`` are left out.
    """

    def __init__(
        self,
        store: ProjectStore,
        image_ids: Sequence[int],
        categories_map: Mapping[int, int],
        spec: InputSpec,
        train: bool,
        *,
        augmentation: Augmentation | None = None,
    ) -> None:
        items = []
        skipped = 0
        for image_id in image_ids:
            rec = store.image(image_id)
            item = _Item(store.abspath(rec), rec.width, rec.height)
            for inst in store.instances(image_id):
                if inst.category_id not in categories_map:
                    skipped += 1
                    continue
                if train and inst.crowd:
                    continue  # no training target, as torchvision's COCO recipe does
                item.labels.append(categories_map[inst.category_id])
                item.shapes.append(inst.polygons)
                item.iscrowd.append(int(inst.crowd))
            items.append(item)
        if skipped:
            log.warning("%d instances of categories the model does not know were left out", skipped)
        self.image_ids = list(image_ids)
        super().__init__(items, spec, train, augmentation)

    def _masks(self, item: _Item, height: int, width: int, scale: float) -> np.ndarray:
        return rasterize(item.shapes, height, width, scale)


def _safe_image_path(images_root: Path, file_name: str) -> Path:
    """The image a COCO file names, through the same checks as ``maskloop import-coco``."""
    root = images_root.resolve()
    relative = safe_relative_name(file_name)
    path = resolve_inside(root, relative) if relative is not None else None
    if path is None:
        raise DatasetError(
            f"The COCO file names the image {file_name!r}, which is outside the images "
            f"folder {root}. Only images inside that folder are read; fix the file_name or "
            "pass the right --images-root."
        )
    return path


def _coco_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A mask from COCO polygons or RLE; RLEs go through the project's validating decoder
    (pycocotools' own can overrun on malformed strings from foreign files)."""
    try:
        if isinstance(segmentation, list):
            polys = [p for p in segmentation if len(p) >= 6]
            if not polys:
                return np.zeros((height, width), dtype=np.uint8)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
            return mask_utils.decode(rle)
        return rle_decode(segmentation, height, width).astype(np.uint8)
    except (GeometryError, TypeError, ValueError) as exc:
        raise DatasetError(f"An annotation's segmentation cannot be used: {exc}") from exc


class CocoFileDataset(_DetectionDataset):
    """Samples straight from a COCO instances file (polygons, RLE, compressed RLE).

    ``categories_map`` maps COCO category id -> model label; by default the file's
    categories in id order become labels 1..K (see ``categories``). Image file names are
    resolved under ``images_root`` and may not leave it. Crowd annotations are left out of
    training and kept (``iscrowd``) for evaluation, as COCOeval expects.
    """

    def __init__(
        self,
        coco_json: Path | str,
        images_root: Path | str,
        *,
        spec: InputSpec,
        train: bool = False,
        categories_map: Mapping[int, int] | None = None,
        augmentation: Augmentation | None = None,
    ) -> None:
        coco_json = Path(coco_json)
        try:
            data = json.loads(coco_json.read_text(encoding="utf-8"))
            images, annotations = data["images"], data.get("annotations", [])
            categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        except OSError as exc:
            raise DatasetError(f"Cannot read the COCO file {coco_json}: {exc.strerror}.") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{coco_json} is not a COCO instances file ({exc!r}); it needs 'images', "
                "'annotations' and 'categories'."
            ) from exc
        self.categories: list[tuple[int, str]] = [(c["id"], c.get("name", "")) for c in categories]
        if categories_map is None:
            categories_map = category_labels([cid for cid, _ in self.categories])
        self.categories_map = dict(categories_map)
        root = Path(images_root)
        by_id: dict[int, _Item] = {}
        for img in images:
            path = _safe_image_path(root, str(img.get("file_name", "")))
            by_id[img["id"]] = _Item(path, int(img["width"]), int(img["height"]))
        skipped = 0
        for ann in annotations:
            item = by_id.get(ann.get("image_id"))
            crowd = int(ann.get("iscrowd", 0))
            if item is None or not ann.get("segmentation") or (train and crowd):
                continue
            label = self.categories_map.get(ann.get("category_id"))
            if label is None:
                skipped += 1
                continue
            item.labels.append(label)
            item.shapes.append(ann["segmentation"])
            item.iscrowd.append(crowd)
        if skipped:
            log.warning(
                "%d annotations of categories the model does not know were left out", skipped
            )
        self.image_ids = list(by_id)
        super().__init__(list(by_id.values()), spec, train, augmentation)

    def _masks(self, item: _Item, height: int, width: int, scale: float) -> np.ndarray:
        masks = np.zeros((len(item.shapes), item.height, item.width), dtype=np.uint8)
        for k, segmentation in enumerate(item.shapes):
            masks[k] = _coco_mask(segmentation, item.height, item.width)
        if scale != 1.0:
            shrunk = TF.resize(tv_tensors.Mask(torch.from_numpy(masks)), [height, width])
            return shrunk.numpy()
        return masks
