"""DESIGN.md's layering: app.core and app.ml never load Qt; app.core never loads torch.

import-linter (``make lint``) checks the import statements; this test checks what really
gets loaded when every module of a layer is imported in a fresh interpreter.
"""

import pkgutil
import subprocess
import sys

import pytest

import app

CHECK = """
import importlib, pkgutil, sys
import app.{layer} as pkg
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(info.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(",".join(bad))
"""


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", {"PySide6", "qtawesome", "torch", "torchvision"}),
        ("ml", {"PySide6", "qtawesome"}),
    ],
)
def test_layer_does_not_load_forbidden_packages(layer, forbidden):
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(layer=layer, forbidden=forbidden)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "", f"app.{layer} loads {out}"


def test_every_layer_has_modules():
    names = {m.name for m in pkgutil.iter_modules(app.__path__)}
    assert {"core", "ml", "ui", "cli"} <= names
