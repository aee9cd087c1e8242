"""Argument types shared by several command groups."""

from __future__ import annotations

import argparse
import re

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str, *, minimum: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """'WxH' -> (width, height), each at least ``minimum``; an argparse type error otherwise."""
    match = _SIZE.match(text)
    if not match or int(match[1]) < minimum[0] or int(match[2]) < minimum[1]:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 512x512 (at least {minimum[0]}x{minimum[1]}), "
            f"not {text!r}"
        )
    return int(match[1]), int(match[2])
