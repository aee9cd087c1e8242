"""Ultralytics YOLO segmentation datasets: export a project for training, import one back.

Layout written (Ultralytics trains on it as it is)::

    OUT/data.yaml                    path, train/val(/test) image folders, names {index: name}
    OUT/images/<split>/<name>        a copy of each image, folders mirrored from the images root
    OUT/labels/<split>/<name>.txt    one line per instance: class x1 y1 x2 y2 ... in 0..1

Class indices are the project's categories in id order, numbered from 0. A YOLO line holds
a single ring, so an instance with holes or several parts is written as the exact pixel-edge
outline of its mask with every hole and further part joined on by a zero-width bridge (in
and out along the same segment), the way Ultralytics' COCO converter joins parts
(``merge_multi_segment``). Ultralytics fills rings with OpenCV's ``fillPoly``, an even-odd
fill: the two passes of a bridge cancel and holes stay empty, apart from the one-pixel line
``fillPoly`` draws along each bridge. Vertices outside the image are clipped to it.

Import reads any folder whose label files sit in a ``labels`` folder beside an ``images``
folder (this layout, and Roboflow's ``train/labels``): a ring that visits a vertex twice (a
bridged ring) is filled even-odd and traced back into parts and holes; a simple ring is kept
vertex for vertex. Every line is checked before anything is written, and a malformed one
(bad number, odd count, out-of-range coordinate, unknown class) refuses the whole import
with its file and line.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.atomic import write_atomic, write_text_atomic
from app.core.extras import require
from app.core.geometry import mask_to_polygons, polygons_to_mask_crop, ring_area
from app.core.images import SUPPORTED_EXTENSIONS, ImageReadError, read_image_size
from app.core.import_problems import Problems
from app.core.interchange import (
    ImportReport,
    PendingImage,
    commit_import,
    find_or_new_image,
    images_root_for,
    relative_to_root,
    resolve_inside,
    source_for,
    store_path,
)
from app.core.name_match import ImagesByName
from app.core.output_files import check_output, check_output_folder, project_image_paths
from app.core.progress import CreatedFiles, Progress
from app.core.progress import report as report_progress
from app.core.score_threshold import exported_instances, project_threshold
from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus, Instance, Polygon
from app.errors import MaskLoopError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS: Mapping[str, float] = {"val": 0.1}
# Coordinates a writer rounded to 6 decimals may land this far past 0 or 1.
RANGE_SLACK = 1e-6
SNAP_PX = 0.01  # imported vertices this close to a whole pixel are put on it
# Ultralytics finds an image's label by replacing the last "/images/" in its path with
# "/labels/": a folder of that name below the split would send it to another label file,
# so export renames it (and import reads it back as the original name).
IMAGES_DIR, ESCAPED_IMAGES_DIR = "images", "images_"


class YoloError(MaskLoopError):
    """A YOLO dataset or export request that cannot be used at all."""


@dataclass
class YoloExportReport:
    """What an export wrote; ``skipped`` holds (what, why); ``stale`` files it did not write."""

    out_dir: Path
    data_yaml: Path
    images: dict[str, int] = field(default_factory=dict)  # split -> images written
    instances: int = 0
    bridged: int = 0  # instances with holes or parts written as one bridged ring
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)


# -- splits -----------------------------------------------------------------------------------


def check_fractions(fractions: Mapping[str, float]) -> None:
    """Raise :class:`YoloError` unless ``fractions`` are val/test shares leaving some train."""
    for split, value in fractions.items():
        if split not in ("val", "test"):
            raise YoloError(f"split {split!r} is not one of val, test (train gets the rest)")
        if not 0.0 <= value < 1.0:
            raise YoloError(f"the {split} fraction must be at least 0 and below 1, not {value}")
    if sum(fractions.values()) >= 1.0:
        raise YoloError("the val and test fractions add up to 1 or more; leave some for train")


def _unit(path: str) -> float:
    """A fixed number in [0, 1) for an image path."""
    return int(hashlib.sha1(path.encode()).hexdigest()[:12], 16) / 16**12


def assign_splits(records: list[ImageRecord], fractions: Mapping[str, float]) -> dict[int, str]:
    """Image id -> split, from a hash of each path: an image keeps its split as others come.

    An image goes to val when its hash number is below the val share, to test when it is
    within the next test share. A split with a positive share that no image falls into takes
    the training image with the lowest number while train keeps one; an empty train takes
    the image with the highest.
    """
    check_fractions(fractions)
    val, test = fractions.get("val", 0.0), fractions.get("test", 0.0)
    units = {r.id: _unit(r.path) for r in records}
    out = {
        rid: "val" if u < val else "test" if u < val + test else "train" for rid, u in units.items()
    }
    for split, share in (("val", val), ("test", test)):
        train = sorted((u, rid) for rid, u in units.items() if out[rid] == "train")
        if share > 0 and split not in out.values() and len(train) > 1:
            out[train[0][1]] = split
    if units and "train" not in out.values():
        out[max(units, key=units.__getitem__)] = "train"
    return out


# -- geometry ---------------------------------------------------------------------------------


def _clip_ring(ring: np.ndarray, width: int, height: int) -> np.ndarray:
    """The ring cut to the image rectangle (Sutherland-Hodgman); unchanged when inside."""
    if ring.min(initial=0) >= 0 and (ring[:, 0] <= width).all() and (ring[:, 1] <= height).all():
        return ring
    pts = ring.astype(np.float64)
    for axis, limit, below in (
        (0, 0.0, False),
        (0, width, True),
        (1, 0.0, False),
        (1, height, True),
    ):
        if len(pts) == 0:
            break
        inside = pts[:, axis] <= limit if below else pts[:, axis] >= limit
        out: list[np.ndarray] = []
        prev, prev_in = pts[-1], inside[-1]
        for p, p_in in zip(pts, inside, strict=True):
            if p_in != prev_in:
                t = (limit - prev[axis]) / (p[axis] - prev[axis])
                out.append(prev + t * (p - prev))
            if p_in:
                out.append(p)
            prev, prev_in = p, p_in
        pts = np.array(out, np.float64).reshape(-1, 2)
    return pts.astype(np.float32)


def _nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices (i, j) of the closest vertices a[i], b[j]; memory bounded by chunking b."""
    step = max(1, 2_000_000 // len(a))
    best, best_i, best_j = math.inf, 0, 0
    for s in range(0, len(b), step):
        d = ((b[s : s + step, None, :] - a[None, :, :]) ** 2).sum(axis=2)
        k = int(d.argmin())
        j, i = divmod(k, len(a))
        if d.flat[k] < best:
            best, best_i, best_j = float(d.flat[k]), i, s + j
    return best_i, best_j


def bridge_rings(rings: list[np.ndarray]) -> np.ndarray:
    """One ring visiting every ring, each joined by a zero-width bridge at its closest vertex."""
    merged = rings[0]
    for ring in rings[1:]:
        i, j = _nearest_pair(merged, ring)
        merged = np.concatenate([merged[: i + 1], ring[j:], ring[: j + 1], merged[i:]])
    return merged


def instance_ring(
    polygons: list[Polygon], width: int, height: int
) -> tuple[np.ndarray, int] | None:
    """(ring in pixels, rings joined) for one YOLO line; None if nothing lies on the image.

    A single part without holes keeps its vertices; anything else is traced from its mask,
    so overlapping parts and holes reach the even-odd fill as the mask has them.
    """
    if len(polygons) == 1 and not polygons[0].holes:
        rings = [polygons[0].exterior]
    else:
        crop, x0, y0 = polygons_to_mask_crop(polygons, height, width)
        if not crop.any():
            return None
        traced = mask_to_polygons(crop, tolerance=0.0, min_area=0.0, offset=(x0, y0))
        rings = [ring for p in traced for ring in (p.exterior, *p.holes)]
    rings = [r for r in (_clip_ring(r, width, height) for r in rings) if len(r) >= 3]
    if not rings:
        return None
    ring = bridge_rings(rings)
    if ring_area(ring) <= 0:
        return None
    return ring, len(rings)


def _decimals(width: int, height: int) -> int:
    """Enough decimals to place a vertex within 0.001 px on this image (6 up to 9999 px)."""
    return max(6, len(str(max(width, height))) + 2)


def format_line(class_index: int, ring: np.ndarray, width: int, height: int) -> str:
    """``class x1 y1 ...`` with coordinates divided by the image size, clipped to 0..1."""
    norm = np.clip(ring.astype(np.float64) / np.array([width, height], np.float64), 0.0, 1.0)
    digits = _decimals(width, height)
    return f"{class_index} " + " ".join(f"{v:.{digits}f}" for v in norm.ravel())


# -- export -----------------------------------------------------------------------------------


def dataset_name(name: str) -> str:
    """An image's path below the split, with folders named ``images`` renamed (see above)."""
    *folders, file = name.split("/")
    return "/".join([ESCAPED_IMAGES_DIR if f == IMAGES_DIR else f for f in folders] + [file])


def _project_name(name: str) -> str:
    *folders, file = name.split("/")
    return "/".join([IMAGES_DIR if f == ESCAPED_IMAGES_DIR else f for f in folders] + [file])


def _data_yaml(out_dir: Path, splits: Iterable[str], names: list[str]) -> str:
    yaml = require("yaml", feature="YOLO export")
    folders = {split: f"images/{split}" for split in splits}
    doc: dict = {"path": str(out_dir.resolve()), "train": folders.get("train", "images/train")}
    # Ultralytics needs a val set: with none, it validates on the training images.
    doc["val"] = folders.get("val", doc["train"])
    if "test" in folders:
        doc["test"] = folders["test"]
    doc["names"] = dict(enumerate(names))
    head = (
        "# Ultralytics YOLO segmentation dataset written by MaskLoop.\n"
        "# Moving this folder? Change 'path' to where it is now.\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _stale_files(out_dir: Path, written: set[Path]) -> list[Path]:
    stale = []
    for sub in ("images", "labels"):
        folder = out_dir / sub
        if folder.is_dir():
            stale += [p for p in folder.rglob("*") if p.is_file() and p.resolve() not in written]
    return sorted(stale)


def export_yolo(
    store: ProjectStore,
    out_dir: Path | str,
    *,
    statuses: Iterable[ImageStatus] = (ImageStatus.DONE,),
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    images_root: Path | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> YoloExportReport:
    """Write the images of ``statuses`` as an Ultralytics segmentation dataset in ``out_dir``.

    Every target is checked before anything is written (project images and the store are
    never replaced; other existing files only with ``overwrite``); each file is written
    atomically. ``fractions`` ({"val": 0.1, "test": ...}) sets the held-out shares.
    Proposals hidden below the project's score threshold are left out. ``progress`` gets
    (images done, images); if it raises :class:`OperationCancelled` (or a write fails) the
    files this export created are removed again.
    """
    require("yaml", feature="YOLO export")
    check_fractions(fractions)
    out_dir = Path(out_dir).expanduser()
    records = store.images(status=list(statuses), include_missing=True)
    root = images_root_for(store, records, Path(images_root) if images_root else None)
    categories = sorted(store.categories(), key=lambda c: c.id)
    class_of = {c.id: k for k, c in enumerate(categories)}
    splits = assign_splits(records, fractions)
    report = YoloExportReport(out_dir=out_dir, data_yaml=out_dir / "data.yaml")
    image_paths = project_image_paths(store)
    image_folders = {p.parent for p in image_paths}
    check_output_folder(store, out_dir, image_folders)
    plan: list[tuple[ImageRecord, str, Path, Path]] = []
    labels_of: dict[Path, str] = {}
    for record in records:
        name = relative_to_root(store, record, root)
        if record.missing or not store.abspath(record).is_file():
            report.skipped.append((record.path, "the image file is missing"))
            continue
        if name is None:
            report.skipped.append((record.path, f"not under the images root {root}"))
            continue
        split = splits[record.id]
        name = dataset_name(name)
        image_target = out_dir / "images" / split / name
        label_target = (out_dir / "labels" / split / name).with_suffix(".txt")
        if label_target in labels_of:
            report.skipped.append(
                (record.path, f"its label file {label_target.name} would be that of "
                              f"{labels_of[label_target]} too (same folder and stem)")
            )  # fmt: skip
            continue
        labels_of[label_target] = record.path
        for target in (image_target, label_target):
            check_output_folder(store, target.parent, image_folders)
            check_output(store, target, overwrite=overwrite, image_paths=image_paths)
        plan.append((record, split, image_target, label_target))
    check_output(store, report.data_yaml, overwrite=overwrite, image_paths=image_paths)
    written: set[Path] = set()
    threshold = project_threshold(store)
    created = CreatedFiles()
    try:
        _write_plan(store, plan, class_of, threshold, report, written, created, progress)
        used = sorted(report.images, key=SPLITS.index)
        text = _data_yaml(out_dir, used, [c.name for c in categories])
        created.will_write(report.data_yaml)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(report.data_yaml, text)
    except BaseException:
        created.remove()
        raise
    report.stale = _stale_files(out_dir, written)
    log.info("exported %d images as YOLO to %s", sum(report.images.values()), out_dir)
    return report


def _write_plan(
    store: ProjectStore,
    plan: list[tuple[ImageRecord, str, Path, Path]],
    class_of: dict[int, int],
    threshold: float,
    report: YoloExportReport,
    written: set[Path],
    created: CreatedFiles,
    progress: Progress | None,
) -> None:
    """Write each planned image and its label file (see :func:`export_yolo`)."""
    for done, (record, split, image_target, label_target) in enumerate(plan):
        report_progress(progress, done, len(plan))
        lines = []
        for inst in exported_instances(store, record.id, threshold):
            made = instance_ring(inst.polygons, record.width, record.height)
            if made is None:
                report.skipped.append((f"{record.path} instance {inst.id}", "no area on the image"))
                continue
            ring, joined = made
            lines.append(format_line(class_of[inst.category_id], ring, record.width, record.height))
            report.bridged += int(joined > 1)
        source = store.abspath(record)
        try:
            for target in (image_target, label_target):
                created.will_write(target)
                target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(image_target, lambda tmp, src=source: shutil.copyfile(src, tmp))
            text = "".join(line + "\n" for line in lines)
            write_text_atomic(label_target, text)
        except OSError as exc:
            raise YoloError(f"cannot write {label_target} or its image: {exc}") from exc
        written |= {image_target.resolve(), label_target.resolve()}
        report.images[split] = report.images.get(split, 0) + 1
        report.instances += len(lines)
    report_progress(progress, len(plan), len(plan))


# -- import -----------------------------------------------------------------------------------


class _BadLine(Exception):
    """One malformed label line."""


def read_names(folder: Path) -> list[str]:
    """Class names from the dataset's ``data.yaml`` (or its only ``*.yaml``), index order."""
    yaml = require("yaml", feature="YOLO import")
    path = folder / "data.yaml"
    if not path.is_file():
        found = sorted(p for p in folder.glob("*.yaml") if p.is_file())
        if len(found) != 1:
            raise YoloError(
                f"no data.yaml in {folder}; YOLO import needs it for the class names "
                "(a 'names:' list or mapping of index: name)"
            )
        path = found[0]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise YoloError(f"{path} is not readable YAML: {exc}") from exc
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise YoloError(f"{path} has no 'names' list or mapping of class index: name")
    keys = sorted(names, key=lambda k: (not isinstance(k, int), str(k)))
    if keys != list(range(len(keys))):
        raise YoloError(f"{path}: 'names' must number the classes 0..{len(keys) - 1}, not {keys}")
    out = []
    for k in keys:
        value = names[k]
        if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
            raise YoloError(f"{path}: class {k} needs a name, not {value!r}")
        name = str(value).strip()
        if name in out:
            raise YoloError(f"{path}: classes {out.index(name)} and {k} are both named {name!r}")
        out.append(name)
    return out


def parse_line(line: str, classes: int) -> tuple[int, np.ndarray]:
    """(class index, (N, 2) normalised points) of one label line (raises _BadLine)."""
    tokens = line.split()
    try:
        values = [float(t) for t in tokens]
    except ValueError as exc:
        raise _BadLine(f"not a number: {exc.args[0].split(': ', 1)[-1]}") from exc
    if not all(math.isfinite(v) for v in values):
        raise _BadLine("coordinates must be finite numbers")
    head, coords = values[0], values[1:]
    if not head.is_integer() or not 0 <= head < classes:
        raise _BadLine(f"class {tokens[0]} is not one of data.yaml's classes 0..{classes - 1}")
    if len(coords) % 2:
        raise _BadLine(f"odd number of coordinates ({len(coords)}): every point needs x and y")
    if len(coords) == 4:
        raise _BadLine("4 numbers are a box (a detection label), not a polygon")
    if len(coords) < 6:
        raise _BadLine(f"a polygon needs at least 3 points, not {len(coords) // 2}")
    pts = np.asarray(coords, np.float64).reshape(-1, 2)
    if pts.min() < -RANGE_SLACK or pts.max() > 1 + RANGE_SLACK:
        bad = pts[(pts < -RANGE_SLACK).any(axis=1) | (pts > 1 + RANGE_SLACK).any(axis=1)][0]
        raise _BadLine(
            f"point ({bad[0]:g}, {bad[1]:g}) lies outside 0..1; YOLO coordinates are "
            "divided by the image's width and height"
        )
    return int(head), np.clip(pts, 0.0, 1.0)


def ring_polygons(points: np.ndarray, width: int, height: int) -> list[Polygon]:
    """Polygons of one label ring (normalised points) on a ``width`` x ``height`` image.

    A ring that visits a vertex twice holds bridged holes or parts: it is filled even-odd
    and traced into exact pixel-edge polygons. A simple ring is kept as it is.
    """
    if len(points) > 3 and np.array_equal(points[0], points[-1]):
        points = points[:-1]  # written closed
    pixels = points * np.array([width, height], np.float64)
    whole = np.round(pixels)
    pixels = np.where(np.abs(pixels - whole) <= SNAP_PX, whole, pixels)
    ring = Polygon(pixels.astype(np.float32))
    if len(np.unique(points, axis=0)) == len(points):
        return [ring] if ring_area(ring.exterior) > 0 else []
    crop, x0, y0 = polygons_to_mask_crop([ring], height, width)
    return mask_to_polygons(crop, tolerance=0.0, min_area=0.0, offset=(x0, y0))


class _ImageFiles:
    """Image files of the dataset by folder and stem, each folder listed once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._dirs: dict[Path, dict[str, Path]] = {}

    def find(self, images_dir: Path, name: str) -> Path | None:
        """The image file ``images_dir/name.<ext>`` if it is there and inside the folder."""
        stem = images_dir / name
        if stem.parent not in self._dirs:
            listing: dict[str, Path] = {}
            if stem.parent.is_dir():
                for p in sorted(stem.parent.iterdir()):
                    if p.suffix.lower() in SUPPORTED_EXTENSIONS:
                        listing.setdefault(p.stem, p)
            self._dirs[stem.parent] = listing
        candidate = self._dirs[stem.parent].get(stem.name)
        if candidate is None:
            return None
        inside = resolve_inside(self.folder, candidate.relative_to(self.folder).as_posix())
        return inside if inside is not None and inside.is_file() else None


def _label_files(folder: Path, report: ImportReport) -> list[tuple[Path, Path, str]]:
    """(label file, its images folder, name below it without extension) for every label."""
    out = []
    for path in sorted(folder.rglob("*.txt")):
        rel = path.relative_to(folder).parts
        found = [k for k, part in enumerate(rel[:-1]) if part == "labels"]
        if any(part.startswith(".") for part in rel) or not found:
            continue
        if path.name == "classes.txt":  # LabelImg's class list beside its labels
            report.skipped.append((Path(*rel).as_posix(), "a class list, not labels"))
            continue
        if resolve_inside(folder, path.relative_to(folder).as_posix()) is None:
            report.skipped.append((Path(*rel).as_posix(), "links outside the folder; not followed"))
            continue
        # labels/train/x -> images/train/x (Ultralytics), train/labels/x -> train/images/x
        k = next((k for k in found if folder.joinpath(*rel[:k], IMAGES_DIR).is_dir()), found[0])
        name = Path(*rel[k + 1 :]).with_suffix("").as_posix()
        out.append((path, folder.joinpath(*rel[:k], IMAGES_DIR), name))
    return out


def _pending_for(
    store: ProjectStore,
    folder: Path,
    label: Path,
    image_file: Path | None,
    name: str,
    by_name: ImagesByName,
    report: ImportReport,
) -> PendingImage | None:
    """The image a label file belongs to: the dataset's own file or a project image by name."""
    where = label.relative_to(folder).as_posix()
    short = name.split("/", 1)[1] if "/" in name and name.split("/", 1)[0] in SPLITS else name
    matches: list[ImageRecord] = []
    for candidate in dict.fromkeys((name, short, _project_name(name), _project_name(short))):
        matches = matches or by_name.find(candidate)
    if image_file is not None:
        record = store.image_by_path(store_path(store, image_file))
        if record is not None:
            return PendingImage(where, record.path, record, None)
        try:
            size = read_image_size(image_file)
        except ImageReadError as exc:
            report.skipped.append((where, f"image unreadable: {exc.reason}"))
            return None
        same = [r for r in matches if (r.width, r.height) == size]
        if len(same) == 1:  # an export of this project coming back
            return PendingImage(where, same[0].path, same[0], None)
        return find_or_new_image(store, image_file, where, None, report)
    if len(matches) == 1:
        return PendingImage(where, matches[0].path, matches[0], None)
    reason = "no project image" if not matches else f"{len(matches)} project images"
    report.skipped.append((where, f"no image beside it in images/ and {reason} named {name!r}"))
    return None


def import_yolo(
    store: ProjectStore,
    folder: Path | str,
    *,
    status: ImageStatus = ImageStatus.DONE,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a YOLO segmentation dataset; every line is checked, then all is written at once
    (``progress`` gets label files read, files; it may raise :class:`OperationCancelled`,
    which leaves the project as it was).

    Class names (data.yaml) become categories by name. An empty label file says its image
    has no objects. Raises :class:`DatasetFormatError` listing every malformed line.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise YoloError(f"YOLO dataset folder {folder} does not exist or is not a folder")
    folder = folder.resolve()
    names = read_names(folder)
    report = ImportReport()
    labels = _label_files(folder, report)
    if not labels:
        raise YoloError(f"no label files (labels/**/*.txt beside images/) under {folder}")
    problems = Problems(str(folder))
    by_name = ImagesByName(store.images(include_missing=True))
    image_files = _ImageFiles(folder)
    pending: list[PendingImage] = []
    claimed: dict[str, str] = {}
    source = source_for(status)
    for done, (label, images_dir, name) in enumerate(labels):
        report_progress(progress, done, len(labels))
        where = label.relative_to(folder).as_posix()
        try:
            text = label.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.add(where, f"not a readable text file: {exc}")
            continue
        lines = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append((*parse_line(line, len(names)), f"{where}:{number}"))
            except _BadLine as exc:
                problems.add(f"{where}:{number}", str(exc))
        image_file = image_files.find(images_dir, name)
        item = _pending_for(store, folder, label, image_file, name, by_name, report)
        if item is None:
            continue
        if item.path in claimed:
            report.skipped.append((where, f"{claimed[item.path]} already labels this image"))
            continue
        claimed[item.path] = where
        width, height = item.size
        for class_index, points, place in lines:
            polygons = ring_polygons(points, width, height)
            if not polygons:
                report.skipped.append((place, "the polygon covers no pixel"))
                item.dropped += 1
                continue
            # category_id holds the class index until the categories exist (below)
            item.instances.append(
                Instance(category_id=class_index, polygons=polygons, source=source)
            )
        pending.append(item)
    report_progress(progress, len(labels), len(labels))
    problems.raise_if_any()
    with store.transaction():
        category_ids = []
        for name in names:
            category = store.category_by_name(name)
            if category is None:
                category = store.add_category(name)
                report.categories_added.append(f"{category.id}:{name}")
            category_ids.append(category.id)
        for item in pending:
            for inst in item.instances:
                inst.category_id = category_ids[inst.category_id]
        commit_import(store, pending, status=status, replace=replace, report=report)
    log.info("imported %d YOLO label files from %s", report.images, folder)
    return report
