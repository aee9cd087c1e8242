"""What every importer shares (COCO, label maps, labelme): safe paths and one-transaction commits.

File names from an imported file are resolved only inside the folder the user chose;
images are found in the project or added to it; categories are matched by id and name;
everything an import writes goes in one store transaction, so a failure leaves the project
as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from app.core.geometry import polygons_bbox
from app.core.images import ImageReadError, read_image_size
from app.core.store import NewImage, ProjectStore, StoreError, default_color
from app.core.types import (
    Category,
    ImageRecord,
    ImageStatus,
    Instance,
    Polygon,
    Provenance,
    Source,
)
from app.errors import MaskLoopError

log = logging.getLogger(__name__)


class CocoImportError(MaskLoopError):
    """A file that cannot be imported; the project is left unchanged."""


@dataclass
class ImportReport:
    """What an import wrote; ``skipped`` holds (what, why) pairs, nothing there was written."""

    images: int = 0
    images_added: int = 0
    instances: int = 0
    categories_added: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, int]] = field(default_factory=list)  # (image, instances) replaced


# -- paths ----------------------------------------------------------------------------------


def store_path(store: ProjectStore, path: Path) -> str:
    """``path`` relative to the project folder, POSIX style (``..`` allowed: the user chose it)."""
    try:
        rel = os.path.relpath(os.path.abspath(path), store.root)
    except ValueError as exc:  # another drive on Windows
        raise MaskLoopError(
            f"{path} cannot be expressed relative to the project folder {store.root}; "
            "keep images on the same drive as the project"
        ) from exc
    return PurePosixPath(Path(rel).as_posix()).as_posix()


def safe_relative_name(name: str) -> str | None:
    """A file name from a foreign file as a POSIX path inside its root, or None if it escapes.

    Backslashes count as separators; absolute paths, drive letters and ``..`` are refused.
    """
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        return None
    posix = name.replace("\\", "/")
    pure = PurePosixPath(posix)
    if pure.is_absolute() or (len(posix) > 1 and posix[1] == ":") or ".." in pure.parts:
        return None
    parts = [p for p in pure.parts if p not in ("", ".")]
    return "/".join(parts) if parts else None


def resolve_inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it stays inside ``root`` after following links, else None."""
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root) else None


def images_root_for(store: ProjectStore, images: list[ImageRecord], root: Path | None) -> Path:
    """The folder export names files relative to: ``root``, else the images' deepest common folder."""
    if root is not None:
        return Path(root).expanduser().resolve()
    if not images:
        return store.root
    folders = [os.path.dirname(store.abspath(im)) for im in images]
    return Path(os.path.commonpath(folders))


def relative_to_root(store: ProjectStore, image: ImageRecord, root: Path) -> str | None:
    path = store.abspath(image)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


# -- shared import plumbing ------------------------------------------------------------------


@dataclass
class PendingImage:
    """Instances bound for one image: an image of the project, or a file to add first.

    ``dropped`` counts the input's shapes for this image that could not be imported (each
    reported): an image with no instances and dropped shapes is left alone, while one with
    neither is one the input explicitly says is empty.
    """

    where: str  # how the user finds it in their input (file name, JSON position)
    path: str  # project-relative
    record: ImageRecord | None
    new_image: NewImage | None
    instances: list[Instance] = field(default_factory=list)
    dropped: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        image = self.record if self.record is not None else self.new_image
        assert image is not None
        return image.width, image.height


def outside_image(polygons: list[Polygon], width: int, height: int) -> str | None:
    """Why ``polygons`` cannot be an object of a ``width`` x ``height`` image, or None."""
    x, y, w, h = polygons_bbox(polygons)
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"it lies wholly outside the {width}x{height} px image"
    return None


def find_or_new_image(
    store: ProjectStore,
    abs_path: Path,
    where: str,
    size: tuple[int, int] | None,
    report: ImportReport,
) -> PendingImage | None:
    """The project image for a file, or a new one if the file is readable; None = reported.

    ``size`` (width, height) from the input must agree with the image.
    """
    rel = store_path(store, abs_path)
    record = store.image_by_path(rel)
    if record is not None:
        if size is not None and size != (record.width, record.height):
            report.skipped.append(
                (where, f"file says {size[0]}x{size[1]} px, the image is "
                        f"{record.width}x{record.height} px")
            )  # fmt: skip
            return None
        return PendingImage(where, rel, record, None)
    if not abs_path.is_file():
        report.skipped.append((where, f"image file {abs_path} not found"))
        return None
    try:
        width, height = read_image_size(abs_path)
        st = abs_path.stat()
    except (ImageReadError, OSError) as exc:
        report.skipped.append((where, f"image unreadable: {getattr(exc, 'reason', exc)}"))
        return None
    if size is not None and size != (width, height):
        report.skipped.append(
            (where, f"file says {size[0]}x{size[1]} px, the image is {width}x{height} px")
        )
        return None
    new = NewImage(rel, width, height, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    return PendingImage(where, rel, None, new)


def commit_import(
    store: ProjectStore,
    pending: Iterable[PendingImage],
    *,
    status: ImageStatus,
    replace: bool,
    report: ImportReport,
) -> None:
    """Write every pending image in one transaction (call inside ``store.transaction()``).

    Images that already hold instances are skipped (reported) unless ``replace``; an image
    whose shapes all failed to parse is left as it was (reported), so a bad file never
    wipes work or marks an image done with nothing on it. Imported work is recorded as
    imported, proposals imported for review as proposals.
    """
    for item in pending:
        for inst in item.instances:
            inst.provenance = (
                Provenance.PROPOSAL if inst.source == Source.MODEL else Provenance.IMPORTED
            )
        if not item.instances and item.dropped:
            report.skipped.append(
                (item.where, f"none of its {item.dropped} shapes could be imported; "
                             "the image was left as it was")
            )  # fmt: skip
            continue
        record = item.record
        if record is None and item.new_image is not None:
            store.add_images([item.new_image])
            record = store.image_by_path(item.path)
            report.images_added += 1
        if record is None:
            raise StoreError(f"could not add image {item.path} to the project")
        existing = store.instance_ids(record.id)  # ids only: their outlines are not needed
        if existing:
            if not replace:
                report.skipped.append(
                    (item.where, f"image already has {len(existing)} instances; "
                                 "use --replace to replace them")
                )  # fmt: skip
                continue
            store.apply_edit(record.id, delete=existing)
            report.deleted.append((record.path, len(existing)))
        store.add_instances(record.id, item.instances)
        store.set_image_status(record.id, status)
        report.images += 1
        report.instances += len(item.instances)


def source_for(status: ImageStatus) -> Source:
    """Imported work counts as human unless it is imported as proposals to review."""
    return Source.MODEL if status == ImageStatus.PROPOSED else Source.HUMAN


def ensure_categories(
    store: ProjectStore, wanted: list[Category], report: ImportReport
) -> dict[int, int]:
    """Make the project hold the file's categories; returns file id -> project id.

    Ids are kept: a new category gets the file's id. A name the project already has under
    another id maps to that category (reported). An unused project category whose id
    clashes is replaced; a used one raises :class:`CocoImportError`. Call inside the
    import's transaction. The project's categories are read once into dicts, so matching
    costs O(N) for N categories.
    """
    by_name = {c.name: c for c in store.categories()}
    by_id = {c.id: c for c in by_name.values()}
    used = store.used_category_ids()
    mapping: dict[int, int] = {}
    problems = []
    for cat in wanted:
        known = by_name.get(cat.name)
        if known is not None:
            mapping[cat.id] = known.id
            if known.id != cat.id:
                report.skipped.append(
                    (f"category {cat.id} {cat.name!r}", f"mapped to the project's id {known.id}")
                )
            continue
        clash = by_id.get(cat.id)
        if clash is not None:
            if clash.id in used:
                problems.append(
                    f"category id {cat.id} is {cat.name!r} in the file but {clash.name!r} "
                    "(with instances) in the project"
                )
                continue
            store.delete_category(clash.id)
            del by_name[clash.name], by_id[clash.id]
        color = cat.color or default_color(len(by_id))
        added = store.add_category(cat.name, color=color, id=cat.id)
        by_name[added.name] = by_id[added.id] = added
        report.categories_added.append(f"{cat.id}:{cat.name}")
        mapping[cat.id] = cat.id
    if problems:
        raise CocoImportError(
            "cannot import: " + "; ".join(problems) + ". Rename the project's category or "
            "import into a new project."
        )
    return mapping
