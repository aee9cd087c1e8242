"""Interchange with Ultralytics and ImageJ/Fiji: export-yolo, import-yolo, export-rois, import-rois."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.coco_cmds import (
    _add_import_options,
    _add_overwrite_option,
    _category_id,
    _print_import,
    _print_skipped,
    _statuses,
)
from app.cli.progress_bar import progress_bar
from app.core.store import ProjectStore
from app.core.types import ImageStatus

SHOW_STALE = 5


def parse_fractions(text: str) -> dict[str, float]:
    """'val=0.1,test=0.05' -> {'val': 0.1, 'test': 0.05}; an argparse type error otherwise."""
    out: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        split, _, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if split.strip() not in ("val", "test") or not 0.0 <= share < 1.0:
            raise argparse.ArgumentTypeError(
                f"expected val=F and/or test=F with 0 <= F < 1, e.g. val=0.1,test=0.1; not {item!r}"
            )
        out[split.strip()] = share
    if sum(out.values()) >= 1.0:
        raise argparse.ArgumentTypeError("the val and test shares must leave some images to train")
    return out


def _add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument(
        "--status",
        type=_statuses,
        default=[ImageStatus.DONE],
        metavar="LIST",
        help="comma list of image statuses to export (default: done)",
    )
    p.add_argument("--images-root", type=Path, help="folder the output layout mirrors")
    _add_overwrite_option(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-yolo",
        help="write an Ultralytics YOLO segmentation dataset (images, labels, data.yaml)",
        description=(
            "Write OUT/images/<split>/, OUT/labels/<split>/ (one line per instance: class "
            "index, then the outline's x y pairs divided by the image size) and OUT/data.yaml "
            "for Ultralytics. Class indices are the categories in id order from 0. Instances "
            "with holes or several parts become one outline joined by zero-width bridges, "
            "which Ultralytics' even-odd fill leaves empty. Images are copied. An image's "
            "split follows from a hash of its path, so later exports keep it. Needs the "
            "'export' extra."
        ),
    )
    _add_export_options(p)
    p.add_argument("out", type=Path, help="dataset folder to write")
    p.add_argument(
        "--split",
        type=parse_fractions,
        default={"val": 0.1},
        metavar="val=F[,test=F]",
        help="shares of images held out for validation (and test); default val=0.1; val=0 "
        "puts every image in train (data.yaml then validates on train)",
    )
    p.set_defaults(func=_export_yolo)

    p = sub.add_parser(
        "import-yolo",
        help="import an Ultralytics YOLO segmentation dataset",
        description=(
            "Import label files from DIR (labels/**.txt beside images/, as export-yolo, "
            "Ultralytics and Roboflow write them); class names come from DIR/data.yaml and "
            "become categories by name. Each label file is matched to the project image of "
            "the same name (so an export comes back onto its images), else its image in "
            "images/ is added. Every line is checked first: a malformed one refuses the "
            "whole import, naming file and line. Needs the 'export' extra."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("dir", type=Path, help="YOLO dataset folder (holds data.yaml)")
    _add_import_options(p)
    p.set_defaults(func=_import_yolo)

    p = sub.add_parser(
        "export-rois",
        help="write one ImageJ/Fiji RoiSet.zip per image",
        description=(
            "Write OUTDIR/<image stem>_RoiSet.zip per image, mirroring the images' folders, "
            "for Fiji's ROI Manager: one ROI per instance named <category>-<n>, with its "
            "category as ROI property and group; instances with holes or several parts are "
            "composite ROIs. Needs the 'export' extra."
        ),
    )
    _add_export_options(p)
    p.add_argument("outdir", type=Path, help="folder of its own to write the ROI sets to")
    p.set_defaults(func=_export_rois)

    p = sub.add_parser(
        "import-rois",
        help="import ImageJ/Fiji ROI sets (*.zip)",
        description=(
            "Import every *.zip ROI set under DIR, matched to project images by name "
            "(x_RoiSet.zip -> x.tif). Polygon, freehand, traced, rectangle, oval and "
            "composite ROIs become instances; lines, points and text are skipped. A ROI's "
            "'category' property picks its category, else --category. Needs the 'export' "
            "extra."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("dir", type=Path, help="folder of RoiSet .zip files")
    p.add_argument("--category", help="category for ROIs without one (default: the first)")
    _add_import_options(p)
    p.set_defaults(func=_import_rois)


def _export_yolo(args: argparse.Namespace) -> int:
    from app.core.yolo import export_yolo

    with (
        ProjectStore.open(args.project) as store,
        progress_bar("exporting", "img") as progress,
    ):
        report = export_yolo(
            store,
            args.out,
            statuses=args.status,
            fractions=args.split,
            images_root=args.images_root,
            overwrite=args.overwrite,
            progress=progress,
        )
    splits = ", ".join(f"{n} {split}" for split, n in report.images.items()) or "none"
    print(f"wrote {report.data_yaml}")
    print(f"images: {splits}; instances: {report.instances} ({report.bridged} with holes or parts)")
    if report.stale:
        print(f"warning: {len(report.stale)} files under {report.out_dir} are from an earlier "
              "export (delete them, or export to a new folder):")  # fmt: skip
        for path in report.stale[:SHOW_STALE]:
            print(f"  {path}")
    _print_skipped(report.skipped)
    return 0


def _import_yolo(args: argparse.Namespace) -> int:
    from app.core.yolo import import_yolo

    with (
        ProjectStore.open(args.project, create=True) as store,
        progress_bar("reading label files", "file") as progress,
    ):
        report = import_yolo(
            store, args.dir, status=args.status, replace=args.replace, progress=progress
        )
    _print_import(report)
    return 0


def _export_rois(args: argparse.Namespace) -> int:
    from app.core.imagej_rois import export_rois

    with (
        ProjectStore.open(args.project) as store,
        progress_bar("writing ROI sets", "img") as progress,
    ):
        report = export_rois(
            store,
            args.outdir,
            statuses=args.status,
            images_root=args.images_root,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(f"wrote {report.files} ROI sets to {report.out_dir}, {report.instances} ROIs "
          f"({report.composite} composite)")  # fmt: skip
    _print_skipped(report.skipped)
    return 0


def _import_rois(args: argparse.Namespace) -> int:
    from app.core.imagej_rois import import_rois

    with (
        ProjectStore.open(args.project) as store,
        progress_bar("reading ROI sets", "file") as progress,
    ):
        category_id = _category_id(store, args.category)
        report = import_rois(
            store,
            args.dir,
            category_id=category_id,
            status=args.status,
            replace=args.replace,
            progress=progress,
        )
    _print_import(report)
    return 0
