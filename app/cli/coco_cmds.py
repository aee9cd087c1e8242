"""Interchange commands: export-coco, import-coco, export-labels, import-labels, import-labelme."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.progress_bar import progress_bar
from app.core.coco_options import Crowd, Segmentation
from app.core.store import ProjectStore
from app.core.types import ImageStatus
from app.errors import MaskLoopError

if TYPE_CHECKING:
    from app.core.coco import ImportReport

SHOW_SKIPPED = 15


def _statuses(text: str) -> list[ImageStatus]:
    try:
        return [ImageStatus(s.strip()) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        choices = ", ".join(s.value for s in ImageStatus)
        raise argparse.ArgumentTypeError(f"statuses are a comma list of: {choices}") from exc


def _import_status(text: str) -> ImageStatus:
    if text not in (ImageStatus.DONE, ImageStatus.PROPOSED):
        raise argparse.ArgumentTypeError("use 'done' or 'proposed'")
    return ImageStatus(text)


def _add_import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status",
        type=_import_status,
        default=ImageStatus.DONE,
        help="status of the imported images: 'done' (training data, default) or 'proposed' "
        "(imported as model proposals to review)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the instances of images that already have some (default: skip them); "
        "only with what parsed: an image none of whose shapes could be read is left as it was",
    )


def _add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (never the project's database or images)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-coco",
        help="write the project's annotations as a COCO instances JSON file",
        description=(
            "Write a COCO instances file (images, categories with the project's ids, "
            "annotations with segmentation, area, bbox). Instances with holes are always "
            "written as compressed RLE, since COCO polygons cannot hold holes. file_name "
            "is relative to --images-root. The file is written under a temporary name and "
            "renamed, so it is never half-written. An existing file is replaced only with "
            "--overwrite; the project's database and images never are."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("out", type=Path, help="COCO JSON file to write")
    _add_overwrite_option(p)
    p.add_argument(
        "--segmentation",
        choices=[m.value for m in Segmentation],
        default=Segmentation.AUTO.value,
        help="auto: polygons, RLE for instances with holes (default); polygon: same, with a "
        "warning per holed instance; rle: compressed RLE for every instance",
    )
    p.add_argument(
        "--status",
        type=_statuses,
        default=[ImageStatus.DONE],
        metavar="LIST",
        help="comma list of image statuses to export (default: done)",
    )
    p.add_argument(
        "--images-root",
        type=Path,
        help="folder file_name values are relative to (default: the deepest folder holding "
        "every exported image)",
    )
    p.set_defaults(func=_export_coco)

    p = sub.add_parser(
        "import-coco",
        help="import a COCO instances JSON file (polygons, RLE) into a project",
        description=(
            "Import images and annotations from a COCO instances file. Images are found by "
            "file_name under --images-root and added to the project if needed (a project is "
            "created if PROJECT holds none). Category ids are kept. Polygons, compressed and "
            "uncompressed RLE are read; RLE masks become exact polygons. A malformed file is "
            "refused as a whole with the position of every bad entry; annotations of missing "
            "image files are skipped and listed. An image none of whose annotations could be "
            "imported is left as it was; one the file lists without annotations is empty."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("coco", type=Path, help="COCO instances JSON file")
    p.add_argument(
        "--images-root", type=Path, required=True, help="folder the file_name values are in"
    )
    _add_import_options(p)
    p.add_argument(
        "--crowd",
        choices=[m.value for m in Crowd],
        default=Crowd.KEEP.value,
        help="iscrowd=1 regions: keep them as crowd regions (default: exported as iscrowd=1, "
        "left out of training targets, kept for evaluation), skip them, or import them as "
        "ordinary instances",
    )
    p.add_argument(
        "--simplify",
        type=float,
        default=0.0,
        metavar="PX",
        help="simplify polygons traced from RLE masks by PX pixels (default 0: exact)",
    )
    p.set_defaults(func=_import_coco)

    p = sub.add_parser(
        "export-labels",
        help="write one 16-bit PNG instance label map per image",
        description=(
            "Write one 16-bit PNG per image (0 = background, instances numbered 1..N), the "
            "format cellpose and StarDist use, mirroring the images' folders under OUTDIR. "
            "Where instances overlap the later one wins; categories are not kept. A folder "
            "that holds project images is refused (the maps could replace them and would "
            "be scanned as images); existing label maps are replaced only with --overwrite."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("outdir", type=Path, help="folder of its own to write the label maps to")
    _add_overwrite_option(p)
    p.add_argument(
        "--status",
        type=_statuses,
        default=[ImageStatus.DONE],
        metavar="LIST",
        help="comma list of image statuses to export (default: done)",
    )
    p.add_argument("--images-root", type=Path, help="folder the output layout mirrors")
    p.set_defaults(func=_export_labels)

    p = sub.add_parser(
        "import-labels",
        help="import a folder of instance label maps (PNG/TIFF, 8/16-bit)",
        description=(
            "Import instance-id images from DIR (0 = background, each other value one "
            "instance). Each file is matched to a project image by file stem, also with a "
            "suffix such as _masks, _cp_masks or _labels removed. Instances become exact "
            "pixel-edge polygons unless --simplify is given."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("dir", type=Path, help="folder of label map files")
    p.add_argument("--category", help="category name for the instances (default: the first)")
    _add_import_options(p)
    p.add_argument(
        "--simplify", type=float, default=0.0, metavar="PX", help="simplify by PX pixels"
    )
    p.add_argument(
        "--min-area", type=float, default=0.0, metavar="PX2", help="drop parts/holes below PX2"
    )
    p.set_defaults(func=_import_labels)

    p = sub.add_parser(
        "import-labelme",
        help="import a folder of labelme JSON files",
        description=(
            "Import labelme annotations (polygon, rectangle, circle and mask shapes; shapes "
            "sharing a group_id become one instance) from every .json under DIR. Labels "
            "become categories by name. Images are found through imagePath inside DIR, "
            "else by file stem among the project's images (a project is created if PROJECT "
            "holds none). Every shape is checked against its image first: an image none of "
            'whose shapes could be read is left as it was; "shapes": [] says it is empty.'
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("dir", type=Path, help="folder of labelme .json files")
    _add_import_options(p)
    p.set_defaults(func=_import_labelme)


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    if not skipped:
        return
    print(f"skipped: {len(skipped)}")
    for what, why in skipped[:SHOW_SKIPPED]:
        print(f"  {what}: {why}")
    if len(skipped) > SHOW_SKIPPED:
        print(f"  ... and {len(skipped) - SHOW_SKIPPED} more")


def _print_import(report: ImportReport) -> None:
    print(
        f"images: {report.images} ({report.images_added} added to the project), "
        f"instances: {report.instances}"
    )
    if report.categories_added:
        print("categories added: " + ", ".join(report.categories_added))
    if report.deleted:
        total = sum(n for _, n in report.deleted)
        print(f"replaced: deleted {total} instances on {len(report.deleted)} images")
        for path, n in report.deleted[:SHOW_SKIPPED]:
            print(f"  {path}: {n} instances")
        if len(report.deleted) > SHOW_SKIPPED:
            print(f"  ... and {len(report.deleted) - SHOW_SKIPPED} more")
    _print_skipped(report.skipped)


def _export_coco(args: argparse.Namespace) -> int:
    from app.core.coco import export_coco

    with (
        ProjectStore.open(args.project) as store,
        progress_bar("exporting", "img") as progress,
    ):
        report = export_coco(
            store,
            args.out,
            segmentation=Segmentation(args.segmentation),
            statuses=args.status,
            images_root=args.images_root,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(f"wrote {report.path}")
    print(f"images: {report.images} (file names relative to {report.images_root})")
    print(
        f"instances: {report.instances} ({report.polygon_instances} polygons, "
        f"{report.rle_instances} RLE)"
    )
    if report.holes_as_rle:
        print(f"warning: {report.holes_as_rle} instances with holes were written as RLE")
    _print_skipped(report.skipped)
    return 0


def _import_coco(args: argparse.Namespace) -> int:
    from app.core.coco import import_coco

    with (
        ProjectStore.open(args.project, create=True) as store,
        progress_bar("reading annotations", "ann") as progress,
    ):
        report = import_coco(
            store,
            args.coco,
            images_root=args.images_root,
            status=args.status,
            replace=args.replace,
            crowd=Crowd(args.crowd),
            simplify=args.simplify,
            progress=progress,
        )
    _print_import(report)
    return 0


def _export_labels(args: argparse.Namespace) -> int:
    from app.core.label_maps import export_label_maps

    with (
        ProjectStore.open(args.project) as store,
        progress_bar("writing label maps", "img") as progress,
    ):
        report = export_label_maps(
            store,
            args.outdir,
            statuses=args.status,
            images_root=args.images_root,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(f"wrote {report.images} label maps to {report.out_dir}, {report.instances} instances")
    if report.overlap_pixels:
        print(f"warning: {report.overlap_pixels} pixels were covered by more than one instance")
    _print_skipped(report.skipped)
    return 0


def _category_id(store: ProjectStore, name: str | None) -> int | None:
    """The id of the project category ``--category NAME`` names (None without the option)."""
    if not name:
        return None
    category = store.category_by_name(name)
    if category is None:
        raise MaskLoopError(
            f"the project has no category {name!r}; choose one of: "
            + ", ".join(c.name for c in store.categories())
        )
    return category.id


def _import_labels(args: argparse.Namespace) -> int:
    from app.core.label_maps import import_label_maps

    with (
        ProjectStore.open(args.project) as store,
        progress_bar("reading label maps", "file") as progress,
    ):
        category_id = _category_id(store, args.category)
        report = import_label_maps(
            store,
            args.dir,
            category_id=category_id,
            status=args.status,
            replace=args.replace,
            simplify=args.simplify,
            min_area=args.min_area,
            progress=progress,
        )
    _print_import(report)
    return 0


def _import_labelme(args: argparse.Namespace) -> int:
    from app.core.labelme import import_labelme

    with (
        ProjectStore.open(args.project, create=True) as store,
        progress_bar("reading labelme files", "file") as progress,
    ):
        report = import_labelme(
            store, args.dir, status=args.status, replace=args.replace, progress=progress
        )
    _print_import(report)
    return 0
