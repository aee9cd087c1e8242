"""Optional dependencies: import them on use, and say which extra installs them when missing.

The ImageJ ROI and YOLO formats and ONNX model export need packages a plain install leaves out
(``pip install 'maskloop[export]'`` brings them); the rest of MaskLoop runs without them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from app.errors import MaskLoopError

EXPORT_EXTRA = "export"


class MissingExtraError(MaskLoopError):
    """A feature needs an optional package that is not installed."""


def require(module: str, *, feature: str, extra: str = EXPORT_EXTRA) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 'maskloop[{extra}]'"
        ) from exc
