"""Annotated images to evaluate on, from outside a project: an image folder beside a folder of
instance label maps (cellpose, StarDist, DSB2018 and most microscopy data sets).

A label map pairs with the image of the same relative path and stem (a ``_masks``-style
suffix allowed, as ``maskloop import-labels`` matches them). Each image may have a kind, for
per-kind figures: from a manifest (a JSON list of ``{"file": ..., "kind": ...}``) or, without
one, from the image's subfolder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core.images import SUPPORTED_EXTENSIONS, read_image
from app.core.label_maps import KNOWN_SUFFIXES, LABEL_EXTENSIONS, read_label_map
from app.ml.evaluate import EvalImage, EvaluationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledImage:
    """One image file, its label map file, and its kind (None: no breakdown)."""

    name: str  # path relative to the images folder
    image: Path
    labels: Path
    kind: str | None


def _label_file(labels_dir: Path, relative: Path) -> Path | None:
    folder = labels_dir / relative.parent
    for suffix in ("", *KNOWN_SUFFIXES):
        for ext in sorted(LABEL_EXTENSIONS):
            candidate = folder / f"{relative.stem}{suffix}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _manifest_kinds(path: Path) -> dict[str, str]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return {str(e["file"]): str(e["kind"]) for e in entries if "kind" in e}
    except OSError as exc:
        raise EvaluationError(f"Cannot read the manifest {path}: {exc.strerror}.") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise EvaluationError(
            f"{path} is not a manifest: it must be a JSON list of objects with 'file' and "
            f"'kind' ({exc!r})."
        ) from exc


def _names_in(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except OSError as exc:
        raise EvaluationError(f"Cannot read the image list {path}: {exc.strerror}.") from exc


def find_labelled_images(
    images_dir: Path | str,
    labels_dir: Path | str,
    *,
    only: Path | str | None = None,
    manifest: Path | str | None = None,
) -> list[LabelledImage]:
    """Every image under ``images_dir`` with a label map under ``labels_dir``.

    ``only`` is a text file of image names (relative paths), one a line, to restrict to (a
    validation split); ``manifest`` gives kinds. Images without a label map are skipped with
    a warning; no pair at all is an error.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder, what in ((images_dir, "images"), (labels_dir, "label maps")):
        if not folder.is_dir():
            raise EvaluationError(f"The {what} folder {folder} does not exist or is not a folder.")
    wanted = _names_in(Path(only)) if only is not None else None
    kinds = _manifest_kinds(Path(manifest)) if manifest is not None else None
    pairs, unlabelled = [], 0
    for path in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS):
        relative = path.relative_to(images_dir)
        name = relative.as_posix()
        if wanted is not None and name not in wanted:
            continue
        label = _label_file(labels_dir, relative)
        if label is None:
            unlabelled += 1
            continue
        if kinds is not None:
            kind = kinds.get(name)
        else:
            kind = relative.parent.as_posix() if relative.parent != Path(".") else None
        pairs.append(LabelledImage(name, path, label, kind))
    if unlabelled:
        log.warning("%d images in %s have no label map in %s; skipped", unlabelled, images_dir, labels_dir)
    if not pairs:
        raise EvaluationError(
            f"No image in {images_dir} has a label map of the same name in {labels_dir}"
            + (f" among the names listed in {only}" if only is not None else "")
            + "."
        )
    if wanted is not None and len(pairs) < len(wanted):
        log.warning("%d of the %d listed images were not found with a label map", len(wanted) - len(pairs), len(wanted))
    return pairs


def eval_images(pairs: list[LabelledImage]) -> Iterator[EvalImage]:
    """The pairs as evaluation images, read one at a time (memory stays at one image)."""
    for pair in pairs:
        yield EvalImage.from_label_map(
            read_image(pair.image), read_label_map(pair.labels), kind=pair.kind, name=pair.name
        )
