"""``maskloop gui`` and ``maskloop screenshot``: the annotation window, live or rendered headless."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import parse_size


def _size(text: str) -> tuple[int, int]:
    return parse_size(text, minimum=(200, 150))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``gui`` and ``screenshot``."""
    p = sub.add_parser(
        "gui",
        help="open the annotation window",
        description=(
            "Open PROJECT in the annotation window. Without PROJECT the last project is "
            "reopened, or a welcome dialog offers to create a project from an image folder, "
            "open one, or open the demo project. Edits are saved as you make them. "
            "Press F1 in the window for the keyboard shortcuts."
        ),
    )
    p.add_argument("project", type=Path, nargs="?", help="project folder (default: the last one)")
    p.set_defaults(func=_gui)

    p = sub.add_parser(
        "screenshot",
        help="render the main window of a project into a PNG (headless)",
        description=(
            "Render the annotation window on PROJECT without showing it (works with "
            "QT_QPA_PLATFORM=offscreen) and save it as a PNG: for documentation and checks."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument(
        "--image", metavar="NAME", help="image to show, as its path in the project (default: first)"
    )
    p.add_argument(
        "--size",
        type=_size,
        default=(1600, 1000),
        metavar="WxH",
        help="window size (default 1600x1000)",
    )
    p.set_defaults(func=_screenshot)


def _gui(args: argparse.Namespace) -> int:
    from app.ui.app import run_gui

    return run_gui(args.project)


def _screenshot(args: argparse.Namespace) -> int:
    from app.ui.app import screenshot

    out = screenshot(args.project, args.out, image=args.image, size=args.size)
    print(f"wrote {out}")
    return 0
