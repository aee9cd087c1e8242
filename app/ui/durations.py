"""How the GUI writes a time span (training and proposal progress alike)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``; negative spans show as ``0:00``."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
