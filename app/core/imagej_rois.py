"""ImageJ/Fiji ROI sets: one ``<image>_RoiSet.zip`` per image, as Fiji's ROI Manager saves them.

Export writes one ROI per instance, named ``<category>-<n>``, its category also in the
ROI's properties (``category: nucleus``), its 1-based class number as the ROI group and
the category colour as stroke colour. An instance of one part without holes is a polygon
ROI (integer vertices when they are whole pixels, else sub-pixel); one with holes or several
parts is a composite (shape) ROI whose closed subpaths ImageJ fills even-odd, the way a
ShapeRoi made with Fiji's XOR is stored. ImageJ and MaskLoop place vertices alike: (0, 0)
is the top-left corner of the first pixel.

Import reads ``*.zip`` ROI sets under a folder and matches each to a project image by its
path without the ``_RoiSet`` suffix (see :mod:`app.core.name_match`). Polygon, freehand,
traced, rectangle, oval and composite ROIs become instances; composite ones are filled
even-odd and traced into exact pixel-edge polygons. ROIs without area (lines, points,
text) and ROIs on another plane of a stack are skipped and reported. An entry that is not
an ImageJ ROI refuses the whole import, naming the file and entry.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.atomic import write_bytes_atomic
from app.core.extras import require
from app.core.geometry import mask_to_polygons, polygons_to_mask_crop
from app.core.import_problems import Problems
from app.core.interchange import (
    ImportReport,
    PendingImage,
    commit_import,
    images_root_for,
    relative_to_root,
    resolve_inside,
    source_for,
)
from app.core.name_match import ImagesByName
from app.core.output_files import check_output, check_output_folder, project_image_paths
from app.core.progress import CreatedFiles, Progress
from app.core.progress import report as report_progress
from app.core.score_threshold import exported_instances, project_threshold
from app.core.store import ProjectStore
from app.core.types import Category, ImageRecord, ImageStatus, Instance, Polygon
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

SUFFIX = "_RoiSet.zip"
MAX_ENTRY_BYTES = 64 * 2**20  # a polygon of 8 million vertices; larger entries are refused
# ImageJ stores integer vertices as 16-bit values read back in -5000..60535.
INT_RANGE = (-5000, 60535)
_AREA_TYPES = {"POLYGON", "FREEHAND", "TRACED"}
_MOVETO, _LINETO, _CLOSE = 0.0, 1.0, 4.0


class RoiError(MaskLoopError):
    """A ROI folder or export request that cannot be used at all."""


@dataclass
class RoiExportReport:
    out_dir: Path
    files: int = 0
    instances: int = 0
    composite: int = 0  # instances with holes or several parts, written as shape ROIs
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _roifile() -> Any:
    return require("roifile", feature="ImageJ ROI import and export")


# -- export -----------------------------------------------------------------------------------


def _argb(color: str) -> bytes:
    """'#rrggbb' as ImageJ's ARGB bytes (opaque); black (no colour) if unreadable."""
    try:
        rgb = bytes.fromhex(color.lstrip("#"))
    except ValueError:
        return b"\x00\x00\x00\x00"
    return b"\xff" + rgb if len(rgb) == 3 else b"\x00\x00\x00\x00"


def _label(name: str) -> str:
    """A category name usable in ROI and zip entry names."""
    return "".join("_" if ch in '/\\:*?"<>|\n\r\t' else ch for ch in name).strip() or "object"


def _even_odd_crop(rings: list[np.ndarray], width: int, height: int) -> tuple[np.ndarray, int, int]:
    """(bool crop, x0, y0) of the rings filled even-odd, as ImageJ fills shape ROIs."""
    pts = np.concatenate(rings)
    x0 = min(max(math.floor(float(pts[:, 0].min())), 0), width)
    y0 = min(max(math.floor(float(pts[:, 1].min())), 0), height)
    x1 = min(max(math.ceil(float(pts[:, 0].max())), x0), width)
    y1 = min(max(math.ceil(float(pts[:, 1].max())), y0), height)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for ring in rings:
        crop, cx, cy = polygons_to_mask_crop([Polygon(ring)], height, width)
        if crop.size:
            mask[cy - y0 : cy - y0 + crop.shape[0], cx - x0 : cx - x0 + crop.shape[1]] ^= crop
    return mask, x0, y0


def _even_odd(rings: list[np.ndarray], width: int, height: int) -> list[Polygon]:
    """Rings filled even-odd, traced into exact pixel-edge polygons."""
    mask, x0, y0 = _even_odd_crop(rings, width, height)
    return mask_to_polygons(mask, tolerance=0.0, min_area=0.0, offset=(float(x0), float(y0)))


def composite_polygons(polygons: list[Polygon], width: int, height: int) -> list[Polygon]:
    """Polygons whose even-odd fill is the instance's mask: its own, or traced from the mask.

    Overlapping parts, or a hole reaching out of its part, would fill differently in ImageJ.
    """
    rings = [r for p in polygons for r in (p.exterior, *p.holes) if len(r) >= 3]
    odd, x0, y0 = _even_odd_crop(rings, width, height)
    crop, cx, cy = polygons_to_mask_crop(polygons, height, width)
    ours = np.zeros_like(odd)
    ours[cy - y0 : cy - y0 + crop.shape[0], cx - x0 : cx - x0 + crop.shape[1]] = crop
    if np.array_equal(odd, ours):
        return polygons
    traced = mask_to_polygons(ours, tolerance=0.0, min_area=0.0, offset=(float(x0), float(y0)))
    return traced or polygons


def _polygon_roi(roifile: Any, ring: np.ndarray) -> Any:
    whole = np.round(ring)
    if np.array_equal(whole, ring) and whole.min() >= INT_RANGE[0] and whole.max() <= INT_RANGE[1]:
        roi = roifile.ImagejRoi.frompoints(whole.astype(np.int32), name="")
    else:
        roi = roifile.ImagejRoi.frompoints(ring.astype(np.float32), name="")
    roi.roitype = roifile.ROI_TYPE.POLYGON
    return roi


def _composite_roi(roifile: Any, polygons: list[Polygon]) -> Any:
    path: list[float] = []
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.holes):
            if len(ring) < 3:
                continue
            path += [_MOVETO, float(ring[0, 0]), float(ring[0, 1])]
            for x, y in ring[1:].tolist():
                path += [_LINETO, x, y]
            path.append(_CLOSE)
    pts = np.concatenate([p.exterior for p in polygons])
    roi = roifile.ImagejRoi()
    roi.roitype = roifile.ROI_TYPE.RECT
    roi.multi_coordinates = np.asarray(path, np.float32)
    roi.shape_roi_size = len(path)
    roi.left, roi.top = (int(math.floor(v)) for v in pts.min(axis=0))
    roi.right, roi.bottom = (int(math.ceil(v)) for v in pts.max(axis=0))
    return roi


def instance_roi(
    roifile: Any, inst: Instance, category: Category, group: int, number: int, size: tuple[int, int]
) -> tuple[Any, bool]:
    """(ImageJ ROI of one instance on a (width, height) image, whether it is composite).

    The ROI is named ``<category>-<number>``.
    """
    composite = len(inst.polygons) > 1 or inst.has_holes
    if composite:
        roi = _composite_roi(roifile, composite_polygons(inst.polygons, *size))
    else:
        roi = _polygon_roi(roifile, inst.polygons[0].exterior)
    roi.name = f"{_label(category.name)}-{number:04d}"
    roi.properties = {"category": category.name.replace("\n", " ")}
    roi.group = group if group <= 255 else 0
    roi.stroke_color = _argb(category.color)
    return roi, composite


def _roi_set_bytes(rois: list[Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for roi in rois:
            zf.writestr(f"{roi.name}.roi", roi.tobytes())
    return buffer.getvalue()


def export_rois(
    store: ProjectStore,
    out_dir: Path | str,
    *,
    statuses: Iterable[ImageStatus] = (ImageStatus.DONE,),
    images_root: Path | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RoiExportReport:
    """One ``<image stem>_RoiSet.zip`` per image, its folders mirrored from the images root.

    Every target is checked first: none in a folder of project images, and existing ones
    replaced only with ``overwrite``; each zip is written atomically. Proposals hidden
    below the project's score threshold are left out. ``progress`` gets (images done,
    images); if it raises :class:`OperationCancelled` (or a write fails) the ROI sets this
    export created are removed again.
    """
    roifile = _roifile()
    out_dir = Path(out_dir).expanduser()
    records = store.images(status=list(statuses), include_missing=True)
    root = images_root_for(store, records, Path(images_root) if images_root else None)
    categories = {c.id: c for c in store.categories()}
    groups = {cid: k for k, cid in enumerate(sorted(categories), 1)}
    report = RoiExportReport(out_dir=out_dir)
    image_paths = project_image_paths(store)
    image_folders = {p.parent for p in image_paths}
    targets: list[tuple[ImageRecord, Path]] = []
    for record in records:
        name = relative_to_root(store, record, root)
        if name is None:
            report.skipped.append((record.path, f"not under the images root {root}"))
            continue
        target = out_dir / Path(name).parent / f"{Path(name).stem}{SUFFIX}"
        check_output_folder(store, target.parent, image_folders)
        check_output(store, target, overwrite=overwrite, image_paths=image_paths)
        targets.append((record, target))
    threshold = project_threshold(store)
    created = CreatedFiles()
    try:
        for done, (record, target) in enumerate(targets):
            report_progress(progress, done, len(targets))
            _write_roi_set(
                roifile, store, record, target, categories, groups, threshold, report, created
            )
        report_progress(progress, len(targets), len(targets))
    except BaseException:
        created.remove()
        raise
    log.info("exported %d ROI sets to %s", report.files, out_dir)
    return report


def _write_roi_set(
    roifile: Any,
    store: ProjectStore,
    record: ImageRecord,
    target: Path,
    categories: dict[int, Category],
    groups: dict[int, int],
    threshold: float,
    report: RoiExportReport,
    created: CreatedFiles,
) -> None:
    """One image's ROI set (see :func:`export_rois`)."""
    rois = []
    for number, inst in enumerate(exported_instances(store, record.id, threshold), 1):
        if not any(len(p.exterior) >= 3 for p in inst.polygons):
            report.skipped.append((f"{record.path} instance {inst.id}", "no polygon"))
            continue
        category = categories[inst.category_id]
        roi, composite = instance_roi(
            roifile,
            inst,
            category,
            groups[inst.category_id],
            number,
            (record.width, record.height),
        )
        rois.append(roi)
        report.composite += int(composite)
    data = _roi_set_bytes(rois)
    created.will_write(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
    except OSError as exc:
        raise RoiError(f"cannot write {target}: {exc.strerror or exc}") from exc
    report.files += 1
    report.instances += len(rois)


# -- import -----------------------------------------------------------------------------------


class _NoArea(Exception):
    """A valid ROI that is not an object outline; reported and skipped."""


def roi_polygons(roifile: Any, roi: Any, width: int, height: int) -> list[Polygon]:
    """Polygons of one ROI on a ``width`` x ``height`` image (raises _NoArea)."""
    kind = roi.roitype.name
    if roi.subtype.name in ("TEXT", "ARROW", "IMAGE"):
        raise _NoArea(f"a {roi.subtype.name.lower()} overlay has no outline")
    plane = max(roi.position, roi.c_position, roi.z_position, roi.t_position)
    if plane > 1:
        raise _NoArea(f"it lies on plane {plane} of a stack; MaskLoop shows the first plane")
    if roi.composite:
        try:
            rings = roifile.ImagejRoi.path2coords(roi.multi_coordinates)
        except (NotImplementedError, RuntimeError, IndexError) as exc:
            raise _NoArea(f"its shape path cannot be read ({exc})") from exc
        rings = [r for r in rings if len(r) >= 3]
        polygons = _even_odd(rings, width, height) if rings else []
    elif kind in _AREA_TYPES or kind == "OVAL":
        ring = np.asarray(roi.coordinates(), np.float64).reshape(-1, 2)
        polygons = [Polygon(ring)] if len(ring) >= 3 else []
    elif kind == "RECT":
        if roi.subpixelrect:
            x0, y0, x1, y1 = roi.xd, roi.yd, roi.xd + roi.widthd, roi.yd + roi.heightd
        else:
            x0, y0, x1, y1 = roi.left, roi.top, roi.right, roi.bottom
        polygons = [Polygon([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]
    else:
        raise _NoArea(f"a {kind.lower()} ROI has no area")
    if not polygons or not polygons_to_mask_crop(polygons, height, width)[0].any():
        raise _NoArea("it covers no pixel of the image")
    return polygons


def _read_entries(path: Path, where: str, problems: Problems) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            too_big = [i.filename for i in infos if i.file_size > MAX_ENTRY_BYTES]
            if too_big:
                problems.add(f"{where}/{too_big[0]}", "entry larger than any ROI")
                return []
            return [(i.filename, zf.read(i)) for i in infos if i.filename.lower().endswith(".roi")]
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        problems.add(where, f"not a readable zip file: {exc}")
        return []


def _image_for(
    name: str, where: str, by_name: ImagesByName, report: ImportReport
) -> ImageRecord | None:
    matches = by_name.find(name)
    if len(matches) == 1:
        return matches[0]
    reason = "no project image" if not matches else f"{len(matches)} project images"
    report.skipped.append((where, f"{reason} named {name!r}"))
    return None


def _image_name(rel: Path) -> str:
    stem = rel.name[: -len(".zip")]
    for suffix in ("_RoiSet", "-RoiSet", "RoiSet", "_rois", "_ROIs"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return (rel.parent / stem).as_posix()


def import_rois(
    store: ProjectStore,
    folder: Path | str,
    *,
    category_id: int | None = None,
    status: ImageStatus = ImageStatus.DONE,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every ``*.zip`` ROI set under ``folder``; checked first, written in one go
    (``progress`` gets sets read, sets; it may raise :class:`OperationCancelled`, which
    leaves the project as it was).

    A ROI's category comes from its ``category`` property (added to the project if new),
    else ``category_id`` (default: the project's first category, 'object' if none).
    """
    roifile = _roifile()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise RoiError(f"ROI folder {folder} does not exist or is not a folder")
    folder = folder.resolve()
    if category_id is not None:
        store.category(category_id)
    report = ImportReport()
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.suffix.lower() != ".zip" or any(part.startswith(".") for part in rel.split("/")):
            continue
        if resolve_inside(folder, rel) is None:
            report.skipped.append((rel, "links outside the folder; not followed"))
        elif p.is_file():
            files.append(p)
    if not files:
        raise RoiError(f"no ImageJ ROI sets (*.zip) under {folder}")
    problems = Problems(str(folder))
    source = source_for(status)
    by_name = ImagesByName(store.images(include_missing=True))
    pending: list[tuple[PendingImage, list[str | None]]] = []
    claimed: dict[int, str] = {}
    for done, path in enumerate(files):
        report_progress(progress, done, len(files))
        rel = path.relative_to(folder)
        where = rel.as_posix()
        entries = _read_entries(path, where, problems)
        record = _image_for(_image_name(rel), where, by_name, report)
        if record is None:
            continue
        if record.id in claimed:
            report.skipped.append((where, f"{claimed[record.id]} already holds this image's ROIs"))
            continue
        claimed[record.id] = where
        item = PendingImage(where, record.path, record, None)
        names: list[str | None] = []
        for entry, data in entries:
            place = f"{where}/{entry}"
            try:
                roi = roifile.ImagejRoi.frombytes(data)
            except (ValueError, struct.error, TypeError, IndexError) as exc:
                problems.add(place, f"not an ImageJ ROI: {exc}")
                continue
            try:
                polygons = roi_polygons(roifile, roi, record.width, record.height)
            except _NoArea as exc:
                report.skipped.append((place, str(exc)))
                item.dropped += 1
                continue
            item.instances.append(Instance(category_id=-1, polygons=polygons, source=source))
            category = str(roi.properties.get("category", "")).strip() if roi.props else ""
            names.append(category or None)
        pending.append((item, names))
    report_progress(progress, len(files), len(files))
    problems.raise_if_any()
    with store.transaction():
        categories = _Categories(store, category_id, report)
        for item, names in pending:
            for inst, name in zip(item.instances, names, strict=True):
                inst.category_id = categories.id_for(name)
        commit_import(store, [p for p, _ in pending], status=status, replace=replace, report=report)
    log.info("imported %d ROI sets from %s", report.images, folder)
    return report


class _Categories:
    """Category ids by ROI category name; new names are added, unnamed ROIs get the default."""

    def __init__(self, store: ProjectStore, default: int | None, report: ImportReport) -> None:
        self.store, self.default, self.report = store, default, report
        self.by_name = {c.name: c.id for c in store.categories()}

    def id_for(self, name: str | None) -> int:
        if name is None:
            if self.default is None:
                cats = self.store.categories()
                self.default = cats[0].id if cats else self.id_for("object")
            return self.default
        if name not in self.by_name:
            self.by_name[name] = self.store.add_category(name).id
            self.report.categories_added.append(f"{self.by_name[name]}:{name}")
        return self.by_name[name]
