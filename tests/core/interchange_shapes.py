"""A project of real annotation shapes for format round trips (YOLO, ImageJ ROIs).

Four 400x300 images of 500 instances each (2,000 in all): disks traced from masks, rings
with a hole, two-part objects, objects with two holes, hand-drawn sub-pixel polygons, and
on each image one large object partly outside the image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from app.core.geometry import mask_to_polygons, polygons_to_mask_crop
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon

W, H = 400, 300
COLS, ROWS = 25, 20  # cells of 16 x 15 px
IMAGES = ("plate/a.png", "plate/b.png", "plate/sub/c.png", "d.png")


def _cell_polygons(kind: int, x0: int, y0: int, rng: np.random.Generator) -> list[Polygon]:
    if kind == 3:  # hand-drawn, vertices off the pixel grid
        ring = np.array([[2.3, 1.6], [13.7, 3.2], [11.1, 13.4], [3.4, 12.2]], np.float32)
        return [Polygon(ring + rng.uniform(-0.9, 0.9, ring.shape).astype(np.float32) + [x0, y0])]
    m = np.zeros((15, 16), np.uint8)
    if kind == 0:
        cv2.circle(m, (8, 7), int(rng.integers(4, 7)), 1, -1)
    elif kind == 1:
        cv2.circle(m, (8, 7), 6, 1, -1)
        cv2.circle(m, (8, 7), int(rng.integers(1, 3)), 0, -1)
    elif kind == 2:
        cv2.rectangle(m, (1, 1), (5, 12), 1, -1)
        cv2.circle(m, (11, 8), 3, 1, -1)
    else:
        cv2.rectangle(m, (1, 1), (14, 13), 1, -1)
        m[3:6, 3:7] = 0
        m[8:11, 8:12] = 0
    return mask_to_polygons(m, tolerance=0.0, min_area=0.0, offset=(x0, y0))


def make_project(root: Path, *, categories: tuple[str, ...] = ("nucleus", "debris")) -> Path:
    """A project at root/proj over images in root/images; returns the project folder."""
    rng = np.random.default_rng(0)
    proj = root / "proj"
    with ProjectStore.open(proj, create=True) as store:
        cats = [store.add_category(name) for name in categories]
        for k, name in enumerate(IMAGES):
            path = root / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((H, W), 20 * k, np.uint8))
            (iid,) = store.add_images([NewImage(f"../images/{name}", W, H)])
            instances = []
            for cell in range(COLS * ROWS - 1):
                r, c = divmod(cell, COLS)
                polygons = _cell_polygons(cell % 5, c * 16, r * 15, rng)
                instances.append(Instance(cats[cell % len(cats)].id, polygons))
            big = np.array([[-30.5, 200], [120, 190], [140, 330], [-10, 320]], np.float32)
            instances.append(Instance(cats[0].id, [Polygon(big)]))
            store.add_instances(iid, instances)
            store.set_image_status(iid, ImageStatus.DONE)
    return proj


def crop_iou(a: list[Polygon], b: list[Polygon], height: int = H, width: int = W) -> float:
    """Mask IoU of two instances on the image, rasterised in their boxes only."""
    ca, ax, ay = polygons_to_mask_crop(a, height, width)
    cb, bx, by = polygons_to_mask_crop(b, height, width)
    x0, y0 = min(ax, bx), min(ay, by)
    x1 = max(ax + ca.shape[1], bx + cb.shape[1])
    y1 = max(ay + ca.shape[0], by + cb.shape[0])
    ma = np.zeros((y1 - y0, x1 - x0), bool)
    mb = np.zeros_like(ma)
    ma[ay - y0 : ay - y0 + ca.shape[0], ax - x0 : ax - x0 + ca.shape[1]] = ca
    mb[by - y0 : by - y0 + cb.shape[0], bx - x0 : bx - x0 + cb.shape[1]] = cb
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 1.0


def instances_by_image(store: ProjectStore) -> dict[str, list[Instance]]:
    """Each image's instances, keyed by the image file's name below images/."""
    out = {}
    for record in store.images():
        name = record.path.split("images/", 1)[1]
        out[name.removeprefix("train/").removeprefix("val/").removeprefix("test/")] = (
            store.instances(record.id)
        )
    return out
