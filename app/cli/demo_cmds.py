"""``maskloop demo``: make a project of synthetic nuclei to try the whole loop offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.core.store import DB_NAME
from app.core.types import ImageStatus

from ._args import parse_size


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="create a demo project of synthetic and real nuclei",
        description=(
            "Create a project in DIR with synthetic fluorescence-nuclei images (8-bit PNG and "
            "16-bit TIFF in DIR/images) and five real DSB2018 images (real_*.png: four "
            "fluorescence, one brightfield; CC0, BBBC038v1). The first --done synthetic "
            "images carry their ground truth and are marked done, so training and evaluation "
            "work at once; the others are new, ready for the bundled model's proposals. "
            "Nothing is downloaded. DIR must be new or empty; if it already holds a demo "
            "project, that project is just reported."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder for the new project")
    p.add_argument(
        "--images", type=int, default=12, metavar="N", help="number of images (default 12)"
    )
    p.add_argument(
        "--done",
        type=int,
        default=None,
        metavar="K",
        help="how many of them get ground truth and status done (default 4, at most N)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed; same seed, same images"
    )
    p.add_argument(
        "--size",
        type=_parse_size,
        default=(512, 512),
        metavar="WxH",
        help="image width x height in pixels (default 512x512)",
    )
    p.add_argument(
        "--no-real",
        dest="real",
        action="store_false",
        help="leave out the real DSB2018 images (synthetic images only)",
    )
    p.set_defaults(func=_demo)


def _parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (height, width), the order the library takes."""
    width, height = parse_size(text)
    return height, width


def _demo(args: argparse.Namespace) -> int:
    from app.demo.project import create_demo_project

    existed = (args.dir / DB_NAME).exists()
    n_done = min(4, args.images) if args.done is None else args.done
    with create_demo_project(
        args.dir,
        n_images=args.images,
        n_done=n_done,
        seed=args.seed,
        size=args.size,
        real=args.real,
    ) as store:
        counts = store.status_counts()
        images = store.images()
        if existed:
            print(f"{store.root} already holds a demo project; left it as it is.")
        else:
            print(f"created demo project: {store.root}")
        real = [rec for rec in images if Path(rec.path).name.startswith("real_")]
        synthetic = [rec for rec in images if rec not in real]
        png = sum(1 for rec in synthetic if rec.path.endswith(".png"))
        print(
            f"images: {len(images)} in {store.root / 'images'} "
            f"({png} 8-bit PNG, {len(synthetic) - png} 16-bit TIFF, "
            f"{synthetic[0].width}x{synthetic[0].height} px"
            + (f"; {len(real)} real DSB2018 images, CC0" if real else "")
            + ")"
        )
        print(
            f"annotations: {counts[ImageStatus.DONE]} images done, {store.count_instances()} "
            f"instances in all; {counts[ImageStatus.NEW]} new images to review"
        )
        print(f"next: maskloop gui {store.root}")
    return 0
