"""Logging set-up for the command line and the GUI: console plus a rotating log file."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from app.paths import log_dir

LOG_FILE = "maskloop.log"
MAX_BYTES = 2_000_000
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


def log_file_path() -> Path:
    return log_dir() / LOG_FILE


def setup_logging(*, verbose: bool = False, to_file: bool = True) -> Path | None:
    """Log to stderr (INFO, or DEBUG when verbose) and to a rotating file in the user data folder.

    Returns the log file's path, or None when it could not be created (read-only home):
    logging to the console still works then.
    """
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "_maskloop", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console._maskloop = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if not to_file:
        return None
    path = log_file_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the log file %s: %s", path, exc)
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.DEBUG)
    handler._maskloop = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    return path
