"""Lossless COCO instances JSON export and import (shared import steps: app.core.interchange).

Export writes the project's stable category ids and names, image ids and annotation ids
numbered from 1 in path order, and each instance as COCO polygons or compressed RLE (see
:class:`Segmentation`). Coordinates follow pixel edges (see :mod:`app.core.geometry`), as
COCO's own tools do, and are rounded to 0.01 px.

Import validates the whole file before writing anything, then writes in one store
transaction: a malformed file raises :class:`CocoImportError` naming each bad entry by its
JSON position and leaves the project unchanged. Annotations of image files that are not
there are skipped and reported. RLE masks become exact pixel-edge polygons (``simplify``
px of Douglas-Peucker on request), so an import then export gives back the same masks.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app import __version__
from app.core.atomic import remove_stale_temps, write_json_atomic
from app.core.coco_options import Crowd, Segmentation
from app.core.geometry import (
    MAX_COORD,
    GeometryError,
    mask_to_polygons,
    polygons_to_rle,
    rle_to_mask_crop,
)
from app.core.images import MAX_PIXELS_ENV, pixel_limit
from app.core.import_problems import Problems
from app.core.interchange import (
    CocoImportError,
    ImportReport,
    PendingImage,
    commit_import,
    ensure_categories,
    find_or_new_image,
    images_root_for,
    outside_image,
    relative_to_root,
    resolve_inside,
    safe_relative_name,
    source_for,
)
from app.core.output_files import check_output
from app.core.progress import Progress
from app.core.progress import report as report_progress
from app.core.score_threshold import exported_instances, project_threshold
from app.core.store import ProjectStore
from app.core.types import Category, ImageStatus, Instance, Polygon, Source
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

PROGRESS_EVERY = 500  # annotations between progress reports
COORD_DECIMALS = 2


class CocoExportError(MaskLoopError):
    """An export that cannot be written (nothing to export, unwritable file, bad root)."""


@dataclass
class ExportReport:
    """What an export wrote; ``skipped`` holds (what, why) pairs."""

    path: Path
    images_root: Path
    images: int = 0
    instances: int = 0
    polygon_instances: int = 0
    rle_instances: int = 0
    holes_as_rle: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


# -- export ---------------------------------------------------------------------------------


def _number_list(values: np.ndarray) -> list:
    """JSON numbers: whole values as ints (exact pixel-edge rings stay compact)."""
    flat = values.ravel()
    if not np.any(flat % 1):
        return flat.astype(np.int64).tolist()
    return flat.tolist()


def _whole_or_floats(values: list[float]) -> list:
    """Like :func:`_number_list` for a few numbers, without a numpy round trip per call."""
    rounded = [round(v, COORD_DECIMALS) for v in values]
    if all(v == int(v) for v in rounded):
        return [int(v) for v in rounded]
    return rounded


def _polygon_annotations(
    instances: list[Instance | None],
) -> list[tuple[list, float, list] | None]:
    """(segmentation, area, bbox) of each instance (None: skip), vectorised over an image.

    Coordinates are rounded first and area and bbox computed from the rounded values, so
    exporting what an import of this file stored gives the same numbers again.
    """
    rings, owner = [], []
    for k, inst in enumerate(instances):
        for p in inst.polygons if inst is not None else ():
            if len(p.exterior) >= 3:
                rings.append(p.exterior)
                owner.append(k)
    out: list[tuple[list, float, list] | None] = [None] * len(instances)
    if not rings:
        return out
    pts = np.round(np.concatenate(rings).astype(np.float64), COORD_DECIMALS)
    lengths = np.array([len(r) for r in rings])
    starts = np.cumsum(lengths) - lengths
    nxt = np.arange(1, len(pts) + 1)
    nxt[starts + lengths - 1] = starts
    x, y = pts[:, 0], pts[:, 1]
    areas = np.abs(np.add.reduceat(x * y[nxt] - y * x[nxt], starts)) / 2.0
    fractional = np.logical_or.reduceat((pts % 1 != 0).any(axis=1), starts)
    lo_x, lo_y = np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts)
    hi_x, hi_y = np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)
    as_floats = pts.ravel().tolist()
    as_ints = pts.astype(np.int64).ravel().tolist()
    segs: dict[int, list] = {}
    boxes: dict[int, list[float]] = {}
    area: dict[int, float] = {}
    for i, k in enumerate(owner):
        s, e = 2 * int(starts[i]), 2 * int(starts[i] + lengths[i])
        segs.setdefault(k, []).append(as_floats[s:e] if fractional[i] else as_ints[s:e])
        area[k] = area.get(k, 0.0) + float(areas[i])
        box = boxes.get(k)
        ring_box = [float(lo_x[i]), float(lo_y[i]), float(hi_x[i]), float(hi_y[i])]
        if box is None:
            boxes[k] = ring_box
        else:
            boxes[k] = [min(box[0], ring_box[0]), min(box[1], ring_box[1]),
                        max(box[2], ring_box[2]), max(box[3], ring_box[3])]  # fmt: skip
    for k, seg in segs.items():
        x0, y0, x1, y1 = boxes[k]
        bbox = _whole_or_floats([x0, y0, x1 - x0, y1 - y0])
        out[k] = (seg, round(area[k], COORD_DECIMALS), bbox)
    return out


def _rle_annotation(inst: Instance, height: int, width: int) -> tuple[dict, int, list] | None:
    from pycocotools import mask as mask_utils

    rle = polygons_to_rle(inst.polygons, height, width)
    coded = {"size": rle["size"], "counts": rle["counts"].encode()}
    area = int(mask_utils.area(coded))
    if area == 0:
        return None
    return rle, area, _number_list(mask_utils.toBbox(coded))


def build_coco(
    store: ProjectStore,
    *,
    segmentation: Segmentation = Segmentation.AUTO,
    statuses: Iterable[ImageStatus] = (ImageStatus.DONE,),
    images_root: Path | None = None,
    out_path: Path = Path("-"),
    progress: Progress | None = None,
) -> tuple[dict, ExportReport]:
    """The COCO dict of the project's images with the given statuses, and what it holds.

    Proposals hidden below the project's score threshold are left out. ``progress`` gets
    (images done, images).
    """
    segmentation = Segmentation(segmentation)
    records = store.images(status=list(statuses), include_missing=True)
    threshold = project_threshold(store)
    root = images_root_for(store, records, images_root)
    report = ExportReport(path=out_path, images_root=root)
    now = datetime.now(UTC)
    coco: dict = {
        "info": {
            "description": "COCO instances exported by MaskLoop",
            "version": __version__,
            "year": now.year,
            "contributor": "MaskLoop",
            "date_created": now.isoformat(timespec="seconds"),
        },
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [
            {"id": c.id, "name": c.name, "supercategory": "", "color": c.color}
            for c in store.categories()
        ],
    }
    ann_id = 0
    for image_id, record in enumerate(sorted(records, key=lambda r: r.path), 1):
        report_progress(progress, image_id - 1, len(records))
        name = relative_to_root(store, record, root)
        if name is None:
            report.skipped.append((record.path, f"not under the images root {root}"))
            continue
        coco["images"].append(
            {"id": image_id, "file_name": name, "width": record.width, "height": record.height}
        )
        report.images += 1
        instances = exported_instances(store, record.id, threshold)
        as_polygons = _polygon_annotations(
            [
                None if segmentation == Segmentation.RLE or inst.has_holes or inst.crowd else inst
                for inst in instances
            ]
        )
        for inst, polygon_coded in zip(instances, as_polygons, strict=True):
            as_rle = segmentation == Segmentation.RLE or inst.has_holes or inst.crowd
            if as_rle and segmentation == Segmentation.POLYGON and not inst.crowd:
                report.holes_as_rle += 1
            coded = _rle_annotation(inst, record.height, record.width) if as_rle else polygon_coded
            if coded is None:
                report.skipped.append((f"{record.path} instance {inst.id}", "empty geometry"))
                continue
            seg, area, bbox = coded
            ann_id += 1
            coco["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": inst.category_id,
                    "segmentation": seg,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": int(inst.crowd),
                }
            )
            if as_rle:
                report.rle_instances += 1
            else:
                report.polygon_instances += 1
    report.instances = ann_id
    report_progress(progress, len(records), len(records))
    if report.holes_as_rle:
        log.warning(
            "%d instances with holes were written as RLE: COCO polygons cannot hold holes",
            report.holes_as_rle,
        )
    return coco, report


def _write_coco_json(data: dict, path: Path) -> None:
    """Write the COCO file atomically; a failed write names the file and the reason."""
    try:
        write_json_atomic(path, data, separators=(",", ":"), ensure_ascii=False)
    except OSError as exc:
        raise CocoExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def export_coco(
    store: ProjectStore,
    out_path: Path | str,
    *,
    segmentation: Segmentation | str = Segmentation.AUTO,
    statuses: Iterable[ImageStatus] = (ImageStatus.DONE,),
    images_root: Path | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the project's annotations as a COCO instances file (atomically: a cancelled
    or failed export leaves no file).

    The store and the project's images are never written over; another existing file
    only with ``overwrite`` (see :mod:`app.core.output_files`). ``progress`` gets
    (images done, images) and may raise :class:`OperationCancelled`.
    """
    out_path = Path(out_path)
    check_output(store, out_path, overwrite=overwrite)
    remove_stale_temps(out_path.parent, {out_path.name})
    coco, report = build_coco(
        store,
        segmentation=Segmentation(segmentation),
        statuses=statuses,
        images_root=Path(images_root) if images_root is not None else None,
        out_path=out_path,
        progress=progress,
    )
    _write_coco_json(coco, out_path)
    return report


# -- import ---------------------------------------------------------------------------------


class _Problems(Problems):
    """Malformed entries with their JSON position, raised all at once as a COCO error."""

    def error(self, listing: str) -> MaskLoopError:
        return CocoImportError(
            f"{self.source} is not a valid COCO instances file ({len(self.items)} problems, "
            f"nothing was imported):\n  {listing}"
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _polygons_from_lists(seg: list, where: str, problems: _Problems) -> list[Polygon] | None:
    polygons = []
    for k, ring in enumerate(seg):
        if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
            problems.add(f"{where}[{k}]", "a polygon must be a flat list of >= 3 x, y pairs")
            return None
        if any(isinstance(v, bool) for v in ring):
            problems.add(f"{where}[{k}]", "polygon coordinates must be numbers, not true/false")
            return None
        try:
            values = np.asarray(ring)
        except (ValueError, OverflowError):
            values = np.asarray([None])
        if values.dtype.kind not in "iuf" or values.ndim != 1:
            problems.add(f"{where}[{k}]", "polygon coordinates must be numbers")
            return None
        values = values.astype(np.float64)
        if not np.isfinite(values).all() or np.abs(values).max() > MAX_COORD:
            problems.add(
                f"{where}[{k}]", f"polygon coordinates must be finite, within {MAX_COORD:g}"
            )
            return None
        polygons.append(Polygon(values.reshape(-1, 2)))
    return polygons


def _parse_annotation(
    ann: object,
    where: str,
    images: dict[int, dict],
    category_ids: set[int],
    found: set[int],
    simplify: float,
    problems: _Problems,
) -> tuple[int, Instance, bool] | None:
    """(image id, instance, is crowd), or None when reported as a problem or not needed.

    The segmentation is decoded only for images in ``found`` (their files exist and have
    the size the file says, which is within the pixel limit), so an RLE can never make an
    import allocate more than its real image's size.
    """
    if not isinstance(ann, dict):
        problems.add(where, "an annotation must be an object")
        return None
    image_id, category_id = ann.get("image_id"), ann.get("category_id")
    if not _is_int(image_id) or image_id not in images:
        problems.add(f"{where}.image_id", f"{image_id!r} is not the id of an image in the file")
        return None
    if not _is_int(category_id) or category_id not in category_ids:
        problems.add(f"{where}.category_id", f"{category_id!r} is not a category of the file")
        return None
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, bool | float):
        problems.add(f"{where}.iscrowd", "must be 0 or 1")
        return None
    score = ann.get("score")
    if score is not None and not _is_number(score):
        problems.add(f"{where}.score", "must be a number")
        return None
    if image_id not in found:
        return None
    image = images[image_id]
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        polygons = _polygons_from_lists(seg, f"{where}.segmentation", problems)
        if polygons is None:
            return None
    elif isinstance(seg, dict):
        try:
            crop, x0, y0 = rle_to_mask_crop(seg, image["height"], image["width"])
        except GeometryError as exc:
            problems.add(f"{where}.segmentation", str(exc))
            return None
        polygons = mask_to_polygons(crop, tolerance=simplify, min_area=0.0, offset=(x0, y0))
    else:
        problems.add(f"{where}.segmentation", "must be a list of polygons or an RLE object")
        return None
    outside = outside_image(polygons, image["width"], image["height"]) if polygons else None
    if outside is not None:
        problems.add(f"{where}.segmentation", outside)
        return None
    inst = Instance(category_id=category_id, polygons=polygons, score=score, crowd=bool(crowd))
    return image_id, inst, bool(crowd)


def _duplicate_ids(annotations: list, problems: _Problems) -> None:
    """Annotation ids, where given, must be unique: a repeated one is a copy, not an object."""
    first: dict[int, int] = {}
    for k, ann in enumerate(annotations):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not _is_int(ann_id):
            continue
        if ann_id in first:
            problems.add(
                f"annotations[{k}].id", f"id {ann_id} is also annotations[{first[ann_id]}]"
            )
        else:
            first[ann_id] = k


def _parse_categories(data: dict, problems: _Problems) -> list[Category]:
    cats: list[Category] = []
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    for k, cat in enumerate(data.get("categories", [])):
        where = f"categories[{k}]"
        if not isinstance(cat, dict):
            problems.add(where, "a category must be an object")
            continue
        cid, name, color = cat.get("id"), cat.get("name"), cat.get("color")
        if not _is_int(cid) or cid < 0 or cid > 2**62:
            problems.add(f"{where}.id", "must be a non-negative whole number")
        elif cid in seen_ids:
            problems.add(f"{where}.id", f"id {cid} appears twice")
        elif not isinstance(name, str) or not name.strip():
            problems.add(f"{where}.name", "must be a non-empty string")
        elif name.strip() in seen_names:
            problems.add(f"{where}.name", f"name {name!r} appears twice")
        else:
            seen_ids.add(cid)
            seen_names.add(name.strip())
            ok_color = isinstance(color, str) and len(color) == 7 and color.startswith("#")
            cats.append(Category(cid, name.strip(), color if ok_color else ""))
    return cats


def _parse_images(data: dict, problems: _Problems) -> dict[int, dict]:
    images: dict[int, dict] = {}
    limit = pixel_limit()
    names: set[str] = set()
    for k, image in enumerate(data.get("images", [])):
        where = f"images[{k}]"
        if not isinstance(image, dict):
            problems.add(where, "an image must be an object")
            continue
        iid, name = image.get("id"), image.get("file_name")
        width, height = image.get("width"), image.get("height")
        if not _is_int(iid):
            problems.add(f"{where}.id", "must be a whole number")
        elif iid in images:
            problems.add(f"{where}.id", f"id {iid} appears twice")
        elif not _is_int(width) or not _is_int(height) or width <= 0 or height <= 0:
            problems.add(where, "width and height must be positive whole numbers")
        elif width * height > limit:
            problems.add(
                where,
                f"{width}x{height} px is above the limit of {limit:.3g} pixels; if you trust "
                f"the file, raise it with {MAX_PIXELS_ENV}",
            )
        elif safe_relative_name(name) is None:
            problems.add(
                f"{where}.file_name",
                f"{name!r} is refused: it must be a relative path inside --images-root",
            )
        elif safe_relative_name(name) in names:
            problems.add(f"{where}.file_name", f"{name!r} appears twice")
        else:
            names.add(safe_relative_name(name))
            images[iid] = {"where": where, "file_name": safe_relative_name(name),
                           "width": width, "height": height}  # fmt: skip
    return images


def read_coco(path: Path) -> dict:
    """Load a COCO JSON file, turning unreadable or non-COCO content into CocoImportError."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise CocoImportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise CocoImportError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, list):
        raise CocoImportError(
            f"{path} holds a list, like a COCO results file; an instances file is an object "
            "with 'images', 'annotations' and 'categories'"
        )
    if not isinstance(data, dict):
        raise CocoImportError(f"{path} is not a COCO instances file (not a JSON object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise CocoImportError(f"{path}: '{key}' must be a list")
    return data


def import_coco(
    store: ProjectStore,
    coco_path: Path | str,
    *,
    images_root: Path | str,
    status: ImageStatus = ImageStatus.DONE,
    replace: bool = False,
    crowd: Crowd | str = Crowd.KEEP,
    simplify: float = 0.0,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a COCO instances file; all or nothing (see the module docstring).

    Images are matched by ``file_name`` under ``images_root``; images not in the project
    yet are added when their files exist. Imported images get ``status``; with
    ``proposed`` the instances are model proposals to review. ``crowd`` says what becomes
    of ``iscrowd`` regions. ``progress`` gets (annotations read, annotations in the file)
    while they are decoded, the long part of a big import; the store is written after
    that, in one short transaction.
    """
    coco_path = Path(coco_path)
    root = Path(images_root).expanduser()
    if not root.is_dir():
        raise CocoImportError(f"images root {root} does not exist or is not a folder")
    root = root.resolve()
    status = ImageStatus(status)
    crowd = Crowd(crowd)
    data = read_coco(coco_path)
    problems = _Problems(coco_path)
    categories = _parse_categories(data, problems)
    images = _parse_images(data, problems)
    category_ids = {c.id for c in categories}
    report = ImportReport()
    pending: dict[int, PendingImage] = {}
    if not problems.items:
        for iid, image in images.items():
            abs_path = resolve_inside(root, image["file_name"])
            if abs_path is None:
                report.skipped.append((image["file_name"], "a link leads outside the images root"))
                continue
            item = find_or_new_image(
                store, abs_path, image["file_name"], (image["width"], image["height"]), report
            )
            if item is not None:
                pending[iid] = item
    annotations = data.get("annotations", [])
    _duplicate_ids(annotations, problems)
    crowds = empties = 0
    source = source_for(status)
    found = set(pending)
    for k, ann in enumerate(annotations):
        if progress is not None and k % PROGRESS_EVERY == 0:
            progress(k, len(annotations))
        parsed = _parse_annotation(
            ann, f"annotations[{k}]", images, category_ids, found, simplify, problems
        )
        if parsed is None:
            continue
        image_id, inst, is_crowd = parsed
        skip_crowd = is_crowd and crowd == Crowd.SKIP
        if skip_crowd or not inst.polygons:
            crowds += skip_crowd
            empties += not skip_crowd
            pending[image_id].dropped += 1  # an image with only these is left as it was
            continue
        inst.crowd = is_crowd and crowd == Crowd.KEEP
        inst.source = source
        if source == Source.HUMAN:
            inst.score = None
        pending[image_id].instances.append(inst)
    if progress is not None:
        progress(len(annotations), len(annotations))
    problems.raise_if_any()
    if crowds:
        report.skipped.append(
            (f"{crowds} crowd regions", "iscrowd=1; --crowd keep imports them as crowd regions")
        )
    if empties:
        report.skipped.append((f"{empties} annotations", "empty mask or polygon"))
    with store.transaction():
        mapping = ensure_categories(store, categories, report)
        for item in pending.values():
            for inst in item.instances:
                inst.category_id = mapping[inst.category_id]
        commit_import(store, pending.values(), status=status, replace=replace, report=report)
    log.info(
        "imported %s: %d images (%d new), %d instances, %d skipped",
        coco_path,
        report.images,
        report.images_added,
        report.instances,
        len(report.skipped),
    )
    return report
