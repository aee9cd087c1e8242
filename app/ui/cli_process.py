"""Run ``maskloop COMMAND ...`` in a QProcess: the GUI's way to train and evaluate models
without loading torch work onto its own thread, sharing the command line's behaviour."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment

import app


def cli_process(python: str, arguments: list[str], parent: QObject | None = None) -> QProcess:
    """A QProcess (not started) running the CLI with ``arguments`` under ``python``.

    A frozen build's executable is maskloop itself; otherwise ``python -m app.cli`` runs,
    with the source checkout on PYTHONPATH so it imports wherever the GUI was started.
    """
    proc = QProcess(parent)
    env = QProcessEnvironment.systemEnvironment()
    source_root = str(Path(app.__file__).resolve().parents[1])
    current = env.value("PYTHONPATH")
    env.insert("PYTHONPATH", source_root + (os.pathsep + current if current else ""))
    env.insert("PYTHONUNBUFFERED", "1")
    proc.setProcessEnvironment(env)
    proc.setProgram(python)
    frozen = getattr(sys, "frozen", False) and python == sys.executable
    proc.setArguments([*arguments] if frozen else ["-m", "app.cli", *arguments])
    return proc
