"""Instance-id label maps (the format cellpose and StarDist users exchange): import and export.

A label map is a single-channel image the size of its image where 0 is background and each
other value one instance. Import matches label files to project images by file stem (also
with a ``_masks``/``_cp_masks``/``_labels``-style suffix removed) and turns every id into
exact pixel-edge polygons. Export writes one 16-bit PNG per image with ids 1..N in the
instances' order; where instances overlap, the later one wins (the count is reported).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from app.core.geometry import GeometryError, label_map_to_instances, polygons_to_mask_crop
from app.core.images import ImageReadError, read_image_size
from app.core.interchange import (
    ImportReport,
    PendingImage,
    commit_import,
    images_root_for,
    relative_to_root,
    source_for,
)
from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus, Instance
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

LABEL_EXTENSIONS = frozenset({".png", ".tif", ".tiff"})
KNOWN_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_instances", "_seg")
MAX_PNG_ID = 65535


class LabelMapError(MaskLoopError):
    """A label map folder or file that cannot be used as a whole."""


@dataclass
class LabelExportReport:
    out_dir: Path
    images: int = 0
    instances: int = 0
    overlap_pixels: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_label_map(path: Path) -> np.ndarray:
    """A 2-D integer array of ids from a PNG (8/16-bit, palette) or TIFF (any integer type)."""
    read_image_size(path)  # header check: pixel limit, real image
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            labels = np.asarray(tifffile.imread(path))
        else:
            with Image.open(path) as im:
                if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise ImageReadError(path, f"a label map must be single-channel, not {im.mode}")
                labels = np.asarray(im)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ImageReadError(path, str(exc)) from exc
    labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise ImageReadError(path, f"a label map must be 2-D, not shape {labels.shape}")
    return labels


def _candidate_stems(stem: str) -> list[str]:
    out = [stem]
    for suffix in KNOWN_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            out.append(stem[: -len(suffix)])
    return out


def import_label_maps(
    store: ProjectStore,
    folder: Path | str,
    *,
    category_id: int | None = None,
    status: ImageStatus = ImageStatus.DONE,
    replace: bool = False,
    simplify: float = 0.0,
    min_area: float = 0.0,
) -> ImportReport:
    """Import every label map in ``folder`` (not recursive) onto the project's images.

    All files are read and checked first, then everything is written in one transaction.
    ``category_id`` defaults to the project's first category ('object' is made if none).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise LabelMapError(f"label map folder {folder} does not exist or is not a folder")
    if category_id is not None:
        store.category(category_id)
    files = sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in LABEL_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )  # fmt: skip
    if not files:
        raise LabelMapError(f"no label maps (.png, .tif) in {folder}")
    by_stem: dict[str, list[ImageRecord]] = {}
    for record in store.images(include_missing=True):
        by_stem.setdefault(Path(record.path).stem, []).append(record)
    report = ImportReport()
    source = source_for(status)
    pending: list[PendingImage] = []
    claimed: dict[int, str] = {}
    for path in files:
        matches = next((by_stem[s] for s in _candidate_stems(path.stem) if s in by_stem), [])
        if not matches:
            report.skipped.append((path.name, "no project image has this file stem"))
            continue
        if len(matches) > 1:
            report.skipped.append((path.name, f"{len(matches)} project images share its stem"))
            continue
        record = matches[0]
        if record.id in claimed:
            report.skipped.append((path.name, f"{claimed[record.id]} already maps this image"))
            continue
        try:
            labels = read_label_map(path)
            if labels.shape != (record.height, record.width):
                raise GeometryError(
                    f"label map is {labels.shape[1]}x{labels.shape[0]} px, the image "
                    f"{record.path} is {record.width}x{record.height} px"
                )
            parts = label_map_to_instances(labels, tolerance=simplify, min_area=min_area)
        except (ImageReadError, GeometryError) as exc:
            report.skipped.append((path.name, str(exc)))
            continue
        claimed[record.id] = path.name
        pending.append(PendingImage(path.name, record.path, record, None, []))
        pending[-1].instances = [
            Instance(category_id=-1, polygons=polys, source=source) for polys in parts.values()
        ]
    with store.transaction():
        if category_id is None:
            cats = store.categories()
            category_id = cats[0].id if cats else store.add_category("object").id
        for item in pending:
            for inst in item.instances:
                inst.category_id = category_id
        commit_import(store, pending, status=status, replace=replace, report=report)
    log.info("imported %d label maps from %s", report.images, folder)
    return report


def _write_png16(labels: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    if not cv2.imwrite(str(tmp), labels):
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def export_label_maps(
    store: ProjectStore,
    out_dir: Path | str,
    *,
    statuses: Iterable[ImageStatus] = (ImageStatus.DONE,),
    images_root: Path | str | None = None,
) -> LabelExportReport:
    """One 16-bit PNG label map per image, at its path under the images root (suffix .png)."""
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabelMapError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    records = store.images(status=list(statuses), include_missing=True)
    root = images_root_for(store, records, Path(images_root) if images_root else None)
    report = LabelExportReport(out_dir=out_dir)
    for record in records:
        name = relative_to_root(store, record, root)
        if name is None:
            report.skipped.append((record.path, f"not under the images root {root}"))
            continue
        instances = store.instances(record.id)
        if len(instances) > MAX_PNG_ID:
            report.skipped.append((record.path, f"{len(instances)} instances do not fit 16 bits"))
            continue
        labels = np.zeros((record.height, record.width), np.uint16)
        for value, inst in enumerate(instances, 1):
            crop, x0, y0 = polygons_to_mask_crop(inst.polygons, record.height, record.width)
            if not crop.size:
                continue
            window = labels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
            report.overlap_pixels += int(np.count_nonzero(window[crop]))
            window[crop] = value
        target = (out_dir / name).with_suffix(".png")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_png16(labels, target)
        except OSError as exc:
            raise LabelMapError(f"cannot write {target}: {exc}") from exc
        report.images += 1
        report.instances += len(instances)
    return report
