"""Where MaskLoop finds its bundled files and keeps the user's data.

One place for every location, so a source checkout, a pip install and a frozen
(PyInstaller) build all work without ``__file__`` guesses scattered around the code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "maskloop"
USER_MODELS_ENV = "MASKLOOP_MODELS_DIR"


def bundle_root() -> Path:
    """The folder holding ``model_zoo/`` and ``resources/``.

    A frozen build unpacks them next to the executable's data (``sys._MEIPASS``); a pip
    install ships them inside the ``app`` package (``app/_data``); a source checkout has
    them at the repository root.
    """
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    package = Path(__file__).resolve().parent
    installed = package / "_data"
    if installed.is_dir():
        return installed
    return package.parent


def model_zoo_dir() -> Path:
    return bundle_root() / "model_zoo"


def resources_dir() -> Path:
    return bundle_root() / "resources"


def user_data_dir() -> Path:
    """Per-user data: logs, user model cards and weights (not the projects themselves)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP_NAME


def user_models_dir() -> Path:
    """Users drop their own model cards (JSON) and weights here: ``$MASKLOOP_MODELS_DIR``,
    else ``models`` in the user data folder. Kept free of torch so the CLI can name it in
    ``--help`` without loading the model code."""
    if os.environ.get(USER_MODELS_ENV):
        return Path(os.environ[USER_MODELS_ENV]).expanduser()
    return user_data_dir() / "models"


def log_dir() -> Path:
    return user_data_dir() / "logs"
