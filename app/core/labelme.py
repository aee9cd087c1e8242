"""labelme JSON import, so labelme users can bring their annotations along.

Shapes of type polygon, rectangle, circle and mask become instances; shapes with the same
``group_id`` and label become one instance with several parts. Lines and points carry no
area and are reported. labelme's coordinates are PIL's, i.e. pixel edges like ours.

Each JSON file's ``imagePath`` is followed only while it stays inside the chosen folder;
otherwise (or when that file is gone) the image is looked up in the project by file stem.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.core.geometry import MAX_COORD, mask_to_polygons
from app.core.interchange import (
    ImportReport,
    PendingImage,
    commit_import,
    find_or_new_image,
    outside_image,
    resolve_inside,
    safe_relative_name,
    source_for,
)
from app.core.name_match import ImagesByName
from app.core.progress import Progress
from app.core.progress import report as report_progress
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Instance, Polygon
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")


class LabelmeError(MaskLoopError):
    """A labelme folder that cannot be imported at all."""


class _BadShape(Exception):
    """One shape that cannot be read; reported and skipped."""


def _points(shape: dict) -> np.ndarray:
    pts = shape.get("points")
    if not isinstance(pts, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in pts
    ):
        raise _BadShape("points must be a list of [x, y] numbers")
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise _BadShape("points must be finite numbers")
    if arr.size and np.abs(arr).max() > MAX_COORD:
        raise _BadShape("points lie implausibly far outside the image")
    return arr


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _circle(centre: np.ndarray, edge: np.ndarray) -> np.ndarray:
    radius = float(np.hypot(*(edge - centre)))
    n = int(min(max(math.ceil(2 * math.pi * radius / 2), 16), 360))  # ~2 px edges
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _mask_polygons(shape: dict, pts: np.ndarray, width: int, height: int) -> list[Polygon]:
    """A mask shape's polygons; its PNG header is checked against the image before decoding."""
    if not isinstance(shape.get("mask"), str):
        raise _BadShape("a mask shape needs a base64 PNG mask")
    try:
        raw = base64.b64decode(shape["mask"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadShape("its mask is not valid base64") from exc
    try:
        with Image.open(io.BytesIO(raw)) as header:
            mask_w, mask_h = header.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _BadShape("its mask is not a readable PNG") from exc
    x0, y0 = (math.floor(v) for v in pts.min(axis=0))
    # One pixel of slack: labelme rounds the mask's box.
    if x0 < -1 or y0 < -1 or x0 + mask_w > width + 1 or y0 + mask_h > height + 1:
        raise _BadShape(
            f"its {mask_w}x{mask_h} px mask at ({x0}, {y0}) does not fit the "
            f"{width}x{height} px image"
        )
    mask = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise _BadShape("its mask is not a readable PNG")
    return mask_to_polygons(mask, tolerance=0.0, min_area=0.0, offset=(x0, y0))


def shape_polygons(shape: dict, width: int, height: int) -> list[Polygon]:
    """The polygons of one labelme shape on a ``width`` x ``height`` image (raises _BadShape)."""
    kind = shape.get("shape_type") or "polygon"
    pts = _points(shape)
    if kind == "polygon":
        if len(pts) < 3:
            raise _BadShape("a polygon needs 3 points")
        polygons = [Polygon(pts)]
    elif kind == "rectangle":
        if len(pts) != 2:
            raise _BadShape("a rectangle needs 2 points")
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        polygons = [Polygon([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]
    elif kind == "circle":
        if len(pts) != 2:
            raise _BadShape("a circle needs 2 points")
        polygons = [Polygon(_circle(pts[0], pts[1]))]
    elif kind == "mask":
        if len(pts) < 1:
            raise _BadShape("a mask shape needs points")
        polygons = _mask_polygons(shape, pts, width, height)
        if not polygons:
            raise _BadShape("empty mask")
    else:
        raise _BadShape(f"shape type {kind!r} has no area")
    problem = outside_image(polygons, width, height)
    if problem is not None:
        raise _BadShape(problem)
    return polygons


def _instances(
    shapes: list, item: PendingImage, report: ImportReport
) -> list[tuple[str, list[Polygon]]]:
    """(label, polygons) per instance, grouped by (group_id, label); counts failed shapes."""
    groups: dict[tuple, tuple[str, list[Polygon]]] = {}
    width, height = item.size
    for k, shape in enumerate(shapes):
        label = shape.get("label") if isinstance(shape, dict) else None
        try:
            if not isinstance(label, str) or not label.strip():
                raise _BadShape("a shape needs a label")
            polygons = shape_polygons(shape, width, height)
        except _BadShape as exc:
            report.skipped.append((f"{item.where} shapes[{k}]", str(exc)))
            item.dropped += 1
            continue
        group = shape.get("group_id")
        key = (label.strip(), group) if isinstance(group, int) else (k,)
        groups.setdefault(key, (label.strip(), []))[1].extend(polygons)
    return list(groups.values())


def _image_for(
    store: ProjectStore,
    folder: Path,
    json_path: Path,
    doc: dict,
    report: ImportReport,
    by_stem: ImagesByName,
) -> PendingImage | None:
    where = json_path.relative_to(folder).as_posix()
    width, height = doc.get("imageWidth"), doc.get("imageHeight")
    size = (width, height) if _is_int(width) and _is_int(height) else None
    image_path = doc.get("imagePath")
    rel = safe_relative_name(image_path) if isinstance(image_path, str) else None
    if rel is not None:
        rel = (json_path.parent.relative_to(folder) / rel).as_posix()
        candidate = resolve_inside(folder, rel)
        if candidate is not None and candidate.is_file():
            return find_or_new_image(store, candidate, where, size, report)
    stem = Path(str(image_path).replace("\\", "/")).stem if image_path else json_path.stem
    matches = by_stem.find(stem)
    if len(matches) != 1:
        reason = "no project image" if not matches else f"{len(matches)} project images"
        report.skipped.append(
            (where, f"image {image_path!r} not in the folder; {reason} named {stem!r}")
        )
        return None
    record = matches[0]
    if size is not None and size != (record.width, record.height):
        report.skipped.append((where, f"file says {width}x{height} px, the image is "
                                      f"{record.width}x{record.height} px"))  # fmt: skip
        return None
    return PendingImage(where, record.path, record, None)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def import_labelme(
    store: ProjectStore,
    folder: Path | str,
    *,
    status: ImageStatus = ImageStatus.DONE,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every labelme ``*.json`` under ``folder``; written in one transaction, after
    every file is read (``progress`` gets files read, files; it may raise
    :class:`OperationCancelled`, which leaves the project as it was).

    Every shape is checked against its image first. A file whose shapes all fail leaves
    its image as it was; an empty ``shapes`` list says the image is empty. Labels become
    categories by name (new ones are added with the next free id).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise LabelmeError(f"labelme folder {folder} does not exist or is not a folder")
    folder = folder.resolve()
    files = sorted(
        p for p in folder.rglob("*.json")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip
    if not files:
        raise LabelmeError(f"no labelme .json files under {folder}")
    report = ImportReport()
    source = source_for(status)
    pending: list[tuple[PendingImage, list[tuple[str, list[Polygon]]]]] = []
    by_stem = ImagesByName(store.images(include_missing=True))  # once per import
    for done, path in enumerate(files):
        report_progress(progress, done, len(files))
        where = path.relative_to(folder).as_posix()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            report.skipped.append((where, f"not readable JSON: {exc}"))
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            report.skipped.append((where, "not a labelme file (no 'shapes' list)"))
            continue
        item = _image_for(store, folder, path, doc, report, by_stem)
        if item is None:
            continue
        pending.append((item, _instances(doc["shapes"], item, report)))
    report_progress(progress, len(files), len(files))
    with store.transaction():
        for item, instances in pending:
            for label, polygons in instances:
                category = store.category_by_name(label)
                if category is None:
                    category = store.add_category(label)
                    report.categories_added.append(f"{category.id}:{label}")
                item.instances.append(
                    Instance(category_id=category.id, polygons=polygons, source=source)
                )
        commit_import(store, [p for p, _ in pending], status=status, replace=replace, report=report)
    log.info("imported %d labelme files from %s", report.images, folder)
    return report
