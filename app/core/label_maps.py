"""Instance-id label maps (the format cellpose and StarDist users exchange): import and export.

A label map is a single-channel image the size of its image where 0 is background and each
other value one instance. Import matches label files to project images by file stem (also
with a ``_masks``/``_cp_masks``/``_labels``-style suffix removed) and turns every id into
exact pixel-edge polygons. Export writes one 16-bit PNG per image with ids 1..N in the
instances' order; where instances overlap, the later one wins (the count is reported).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from app.core.atomic import remove_stale_temps, write_bytes_atomic
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
from app.core.name_match import ImagesByName
from app.core.output_files import check_output, check_output_folder, project_image_paths
from app.core.progress import CreatedFiles, Progress
from app.core.progress import report as report_progress
from app.core.score_threshold import exported_instances, project_threshold
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


def read_label_map(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A 2-D integer array of ids from a PNG (8/16-bit, palette) or TIFF (any integer type).

    Headers are checked before anything is decoded: the pixel limit, ``size`` (width,
    height) when given, a single channel and, for TIFFs, a single page (a stack would
    otherwise be decoded whole before refusal).
    """
    width, height = read_image_size(path)  # header check: pixel limit, real image
    if size is not None and (width, height) != size:
        raise ImageReadError(
            path, f"the label map is {width}x{height} px, its image {size[0]}x{size[1]} px"
        )
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                pages, shape = len(tif.pages), tif.series[0].shape
                if pages > 1 or len(tif.series) > 1:
                    raise ImageReadError(
                        path, f"a label map must be one image, not a TIFF of {pages} pages"
                    )
                if len([n for n in shape if n != 1]) > 2:
                    raise ImageReadError(path, f"a label map must be 2-D, not shape {shape}")
                labels = np.asarray(tif.pages[0].asarray())
        else:
            with Image.open(path) as im:
                if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise ImageReadError(path, f"a label map must be single-channel, not {im.mode}")
                labels = np.asarray(im)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
        raise ImageReadError(path, str(exc)) from exc
    labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise ImageReadError(path, f"a label map must be 2-D, not shape {labels.shape}")
    if size is not None and labels.shape != (size[1], size[0]):  # e.g. an EXIF-rotated PNG
        raise ImageReadError(
            path,
            f"the label map is {labels.shape[1]}x{labels.shape[0]} px, its image "
            f"{size[0]}x{size[1]} px",
        )
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
    progress: Progress | None = None,
) -> ImportReport:
    """Import every label map in ``folder`` (not recursive) onto the project's images.

    All files are read and checked first (``progress`` gets files read, files; it may
    raise :class:`OperationCancelled`), then everything is written in one transaction.
    An all-zero map says its image is empty; one whose every id is dropped (``min_area``)
    leaves its image as it was.
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
    by_stem = ImagesByName(store.images(include_missing=True))
    report = ImportReport()
    source = source_for(status)
    pending: list[PendingImage] = []
    claimed: dict[int, str] = {}
    for done, path in enumerate(files):
        report_progress(progress, done, len(files))
        matches = next((m for s in _candidate_stems(path.stem) if (m := by_stem.find(s))), [])
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
            labels = read_label_map(path, (record.width, record.height))
            parts = label_map_to_instances(labels, tolerance=simplify, min_area=min_area)
        except (ImageReadError, GeometryError) as exc:
            report.skipped.append((path.name, str(exc)))
            continue
        claimed[record.id] = path.name
        item = PendingImage(path.name, record.path, record, None)
        item.instances = [
            Instance(category_id=-1, polygons=polys, source=source) for polys in parts.values()
        ]
        if not parts and labels.any():  # every id fell below --min-area: not an empty image
            item.dropped = int(np.count_nonzero(np.unique(labels)))
        pending.append(item)
    report_progress(progress, len(files), len(files))
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
    ok, encoded = cv2.imencode(".png", labels)
    if not ok:
        raise OSError(f"cannot encode a {labels.shape[1]}x{labels.shape[0]} label map as PNG")
    write_bytes_atomic(path, encoded.tobytes())


def export_label_maps(
    store: ProjectStore,
    out_dir: Path | str,
    *,
    statuses: Iterable[ImageStatus] = (ImageStatus.DONE,),
    images_root: Path | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> LabelExportReport:
    """One 16-bit PNG label map per image, at its path under the images root (suffix .png).

    Every target is checked before anything is written: none may land in a folder that
    holds project images, and an existing file is replaced only with ``overwrite``.
    Proposals hidden below the project's score threshold are left out. ``progress`` gets
    (images done, images); if it raises :class:`OperationCancelled` (or a write fails) the
    maps this export created are removed again.
    """
    out_dir = Path(out_dir).expanduser()
    records = store.images(status=list(statuses), include_missing=True)
    root = images_root_for(store, records, Path(images_root) if images_root else None)
    report = LabelExportReport(out_dir=out_dir)
    image_paths = project_image_paths(store)
    image_folders = {p.parent for p in image_paths}
    targets: list[tuple[ImageRecord, Path]] = []
    for record in records:
        name = relative_to_root(store, record, root)
        if name is None:
            report.skipped.append((record.path, f"not under the images root {root}"))
            continue
        target = (out_dir / name).with_suffix(".png")
        check_output_folder(store, target.parent, image_folders)
        check_output(store, target, overwrite=overwrite, image_paths=image_paths)
        targets.append((record, target))
    created = CreatedFiles()
    created.will_make(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabelMapError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    by_folder: dict[Path, set[str]] = {}
    for _, target in targets:
        by_folder.setdefault(target.parent, set()).add(target.name)
    for folder, names in by_folder.items():
        remove_stale_temps(folder, names)
    threshold = project_threshold(store)
    try:
        for done, (record, target) in enumerate(targets):
            report_progress(progress, done, len(targets))
            instances = exported_instances(store, record.id, threshold)
            if len(instances) > MAX_PNG_ID:
                report.skipped.append(
                    (record.path, f"{len(instances)} instances do not fit 16 bits")
                )
                continue
            labels = np.zeros((record.height, record.width), np.uint16)
            for value, inst in enumerate(instances, 1):
                crop, x0, y0 = polygons_to_mask_crop(inst.polygons, record.height, record.width)
                if not crop.size:
                    continue
                window = labels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
                report.overlap_pixels += int(np.count_nonzero(window[crop]))
                window[crop] = value
            created.will_write(target)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_png16(labels, target)
            except OSError as exc:
                raise LabelMapError(f"cannot write {target}: {exc.strerror or exc}") from exc
            report.images += 1
            report.instances += len(instances)
        report_progress(progress, len(targets), len(targets))
    except BaseException:
        created.remove()
        raise
    return report
