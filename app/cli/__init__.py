"""The ``maskloop`` command line.

Each subcommand group lives in its own module with a ``register(subparsers)`` function that
adds its parsers and sets ``func`` (called with the parsed args, returns an exit code).
Library code raises typed exceptions; only this layer turns them into messages and exit codes.

Building the parser must stay cheap (``--version``, ``--help``, and the GUI's train process
start with it): the modules registering parsers import no torch, torchvision, cv2,
pycocotools or PySide6 at module level; a command imports what it needs when it runs.
tests/cli/test_startup.py checks this.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence

from app import __version__
from app.core.store_errors import store_error
from app.errors import MaskLoopError
from app.logs import setup_logging

from . import (
    active_cmds,
    coco_cmds,
    demo_cmds,
    export_model_cmds,
    gui_cmds,
    model_cmds,
    project_cmds,
    train_parsers,
    yolo_roi_cmds,
)

GROUPS = [
    project_cmds,
    coco_cmds,
    yolo_roi_cmds,
    model_cmds,
    export_model_cmds,
    train_parsers,
    active_cmds,
    demo_cmds,
    gui_cmds,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskloop",
        description="Instance-segmentation annotation with a Mask R-CNN in the loop.",
    )
    parser.add_argument("--version", action="version", version=f"maskloop {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MaskLoopError as exc:
        print(f"maskloop: error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # a store read outside a transaction (writes translate)
        print(f"maskloop: error: {store_error(exc, None)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("maskloop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `maskloop models | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
