"""The layering of docs/architecture.md, checked on what really gets loaded.

import-linter (``make lint``) checks the import statements; this test imports every module
of a layer in a fresh interpreter and fails if a forbidden package ended up loaded, which
also catches what an ``importlib`` call or a dependency pulls in.
"""

import pkgutil
import subprocess
import sys

import pytest

import app

QT = {"PySide6", "qtawesome"}
TORCH = {"torch", "torchvision"}
# What each torch- or Qt-free layer must never load; app.ui and app.cli sit on top and may
# load everything below them, so they have no entry here.
FORBIDDEN = {
    "core": QT | TORCH | {"app.ml", "app.demo", "app.ui", "app.cli"},
    "ml": QT | {"app.demo", "app.ui", "app.cli"},
    "demo": QT | TORCH | {"app.ml", "app.ui", "app.cli"},
}
TOP_LAYERS = {"ui", "cli"}

CHECK = """
import importlib, pkgutil, sys
import app.{layer} as pkg
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(info.name)
forbidden = {forbidden!r}
bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
print(",".join(bad))
"""


def _loaded_forbidden(layer: str, forbidden: set[str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", CHECK.format(layer=layer, forbidden=sorted(forbidden))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_load_forbidden_packages(layer):
    out = _loaded_forbidden(layer, FORBIDDEN[layer])
    assert out == "", f"app.{layer} loads {out}"


def test_check_reports_a_forbidden_package_that_is_loaded():
    """The check above can fail: app.ml does load torch, and app.demo loads app.core."""
    assert "torch" in _loaded_forbidden("ml", {"torch"}).split(",")
    assert "app.core.store" in _loaded_forbidden("demo", {"app.core"}).split(",")


def test_every_subpackage_of_app_has_a_layer_rule():
    """A new package under app/ needs its place in the layers (here and in pyproject.toml)."""
    packages = {m.name for m in pkgutil.iter_modules(app.__path__) if m.ispkg}
    assert packages - {"_data"} == set(FORBIDDEN) | TOP_LAYERS
