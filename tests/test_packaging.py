"""Packaging: the wheel carries model_zoo/ and resources/, and an installed copy finds them.

Builds a wheel offline from a copy of the source (no build isolation, so no download),
installs it with ``pip --target`` and runs it with the venv's dependencies. Also checks the
Linux desktop entry, the icons and the desktop install script.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from app import paths

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "resources"
PACKAGING = ROOT / "packaging"
ICON_SIZES = (48, 128, 256)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the checkout's build/ stays untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("app", "model_zoo", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--quiet", "--wheel-dir", str(out), str(src)]
    )
    (built,) = out.glob("maskloop-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    """The wheel installed into its own folder; run it with PYTHONPATH pointing there."""
    target = tmp_path_factory.mktemp("site")
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
        + ["--target", str(target), str(wheel)]
    )
    return target


def _installed_env(target: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(target), "MASKLOOP_NO_NETWORK": "1"}


def test_wheel_contains_every_module_and_the_bundled_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "app").rglob("*.py")}
    assert modules - names == set(), "add the missing app subpackage to pyproject's packages"
    # Benchmark harness (the simulated annotator) stays out of the product.
    assert not any(n.startswith("tests/") or n.endswith("loop_sim.py") for n in names)
    for pattern in ("*.json", "*.pt"):
        bundled = {f"app/_data/model_zoo/{p.name}" for p in (ROOT / "model_zoo").glob(pattern)}
        assert bundled <= names
    assert any(n.startswith("app/_data/model_zoo/") and n.endswith(".json") for n in names)
    assert "app/_data/resources/maskloop.desktop" in names
    assert "app/_data/resources/icons/maskloop.svg" in names
    assert not any("__pycache__" in n or n.startswith(("model_zoo/", "resources/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "maskloop = app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_copy_finds_its_bundled_files(installed: Path) -> None:
    code = (
        "import json, app, app.paths as p;"
        "print(json.dumps({'app': app.__file__, 'zoo': str(p.model_zoo_dir()),"
        " 'cards': sorted(x.name for x in p.model_zoo_dir().glob('*.json')),"
        " 'desktop': (p.resources_dir() / 'maskloop.desktop').is_file()}))"
    )
    proc = _run([sys.executable, "-c", code], env=_installed_env(installed), cwd=installed.parent)
    found = json.loads(proc.stdout)
    assert Path(found["app"]).is_relative_to(installed)
    assert Path(found["zoo"]) == installed / "app" / "_data" / "model_zoo"
    assert found["cards"] == sorted(p.name for p in (ROOT / "model_zoo").glob("*.json"))
    assert found["desktop"]


def test_installed_entry_point_runs(installed: Path) -> None:
    proc = _run(
        [str(installed / "bin" / "maskloop"), "--version"],
        env=_installed_env(installed),
        cwd=installed.parent,
    )
    assert proc.stdout.strip().startswith("maskloop ")


def test_installed_zoo_lists_the_bundled_cards(installed: Path) -> None:
    code = (
        "import json; from app.ml.zoo import list_cards;"
        "print(json.dumps(sorted(c.id for c in list_cards())))"
    )
    env = {**_installed_env(installed), "MASKLOOP_MODELS_DIR": str(installed / "no-user-models")}
    proc = _run([sys.executable, "-c", code], env=env, cwd=installed.parent)
    bundled = {json.loads(p.read_text())["id"] for p in (ROOT / "model_zoo").glob("*.json")}
    assert bundled and bundled <= set(json.loads(proc.stdout))


def test_paths_use_the_frozen_bundle_when_frozen(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert paths.model_zoo_dir() == tmp_path / "model_zoo"
    assert paths.resources_dir() == tmp_path / "resources"


def test_source_checkout_uses_the_repository_folders() -> None:
    assert paths.model_zoo_dir() == ROOT / "model_zoo"
    assert paths.resources_dir() == RESOURCES


def _desktop_entry(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in desktop entries
    parser.read(path, encoding="utf-8")
    return parser["Desktop Entry"]


def test_desktop_entry_runs_the_gui_with_the_app_icon() -> None:
    entry = _desktop_entry(RESOURCES / "maskloop.desktop")
    assert entry["Type"] == "Application"
    assert entry["Exec"] == "maskloop gui %f"
    assert entry["Icon"] == "maskloop"
    assert {"Graphics", "Science"} <= set(entry["Categories"].strip(";").split(";"))
    assert entry["Categories"].endswith(";")


def test_icons_are_valid_at_every_size() -> None:
    svg = ET.parse(RESOURCES / "icons" / "maskloop.svg").getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox") == "0 0 256 256"
    for size in ICON_SIZES:
        with Image.open(RESOURCES / "icons" / f"maskloop-{size}.png") as png:
            assert png.format == "PNG" and png.size == (size, size) and png.mode == "RGBA"
            assert png.getpixel((0, 0))[3] == 0, "corners stay transparent"
            assert png.getpixel((size // 2, size // 2))[3] == 255


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_desktop_script_installs_and_uninstalls(tmp_path: Path) -> None:
    exe = tmp_path / "my apps" / "maskloop"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    data = tmp_path / "share"
    env = {**os.environ, "XDG_DATA_HOME": str(data), "PATH": "/usr/bin:/bin"}
    script = str(PACKAGING / "install_desktop.sh")
    _run(["bash", script, "--exec", str(exe)], env=env)
    entry = _desktop_entry(data / "applications" / "maskloop.desktop")
    assert entry["Exec"] == f'"{exe}" gui %f'
    assert entry["Icon"] == "maskloop"
    icons = data / "icons" / "hicolor"
    assert (icons / "scalable" / "apps" / "maskloop.svg").is_file()
    for size in ICON_SIZES:
        assert (icons / f"{size}x{size}" / "apps" / "maskloop.png").is_file()

    _run(["bash", script, "--uninstall"], env=env)
    assert not (data / "applications" / "maskloop.desktop").exists()
    assert not list(icons.rglob("maskloop.*"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_desktop_script_refuses_a_missing_executable(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    proc = subprocess.run(
        ["bash", str(PACKAGING / "install_desktop.sh"), "--exec", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0 and "not an executable" in proc.stderr
    assert not (tmp_path / "share" / "applications").exists()


@pytest.mark.parametrize("script", sorted(p.name for p in PACKAGING.glob("*.sh")))
def test_packaging_scripts_parse(script: str) -> None:
    _run(["bash", "-n", str(PACKAGING / script)])
