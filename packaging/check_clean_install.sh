#!/usr/bin/env bash
# Check what a pip user gets: a wheel installed into a brand-new venv, used from outside the
# source tree (so nothing can come from the checkout).
#
#   bash packaging/check_clean_install.sh [WHEEL]
#
# Without WHEEL it builds one from a copy of this checkout (`python -m build --wheel` when
# the `build` package is installed, else `pip wheel --no-deps`). Then it creates a venv, installs the
# wheel with its dependencies (torch, torchvision, PySide6, ... from your package index: a
# few GB and several minutes the first time) and runs:
#   maskloop --version, maskloop models (bundled cards found), maskloop demo, maskloop info,
#   and maskloop screenshot headless (QT_QPA_PLATFORM=offscreen).
#
# Environment:
#   PYTHON=python3.11        interpreter for the venv (default: python3)
#   CHECK_DIR=/some/dir      work folder, kept afterwards (default: a temporary one, removed)
#   PIP_INSTALL_ARGS="..."   extra pip arguments for the install, e.g. a CPU-only torch:
#       PIP_INSTALL_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# Not part of `make test` (slow, needs the package index).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [[ -n "${CHECK_DIR:-}" ]]; then
    work="$(mkdir -p "$CHECK_DIR" && cd "$CHECK_DIR" && pwd)"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
step() { printf '\n== %s (%s s)\n' "$*" "$SECONDS"; }

wheel="${1:-}"
if [[ -z "$wheel" ]]; then
    step "building the wheel"
    # From a copy of what the wheel is made of: an in-tree build/ could leak stale files.
    rm -rf "$work/src" && mkdir -p "$work/src"
    cp -r "$root"/{app,model_zoo,resources,pyproject.toml,README.md} "$work/src/"
    find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
    if "$python" -c "import build" 2>/dev/null; then
        "$python" -m build --wheel --outdir "$work/dist" "$work/src"
    else
        "$python" -m pip wheel --no-deps --wheel-dir "$work/dist" "$work/src"
    fi
    wheel="$(ls "$work"/dist/maskloop-*.whl)"
fi
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
echo "wheel: $wheel"

step "creating a clean venv in $work/venv"
rm -rf "$work/venv"
"$python" -m venv "$work/venv"
venv_py="$work/venv/bin/python"
"$venv_py" -m pip install -q --upgrade pip

step "installing the wheel and its dependencies"
# shellcheck disable=SC2086  # PIP_INSTALL_ARGS is a list of arguments
"$venv_py" -m pip install ${PIP_INSTALL_ARGS:-} "$wheel"

cd "$work"  # away from the checkout: `app` must come from the venv
export MASKLOOP_NO_NETWORK=1 QT_QPA_PLATFORM=offscreen
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
mkdir -p "$HOME"
ml="$work/venv/bin/maskloop"

step "the installed package is the one in use, with its data"
"$venv_py" - <<'EOF'
import sys
from pathlib import Path

import app
from app.paths import model_zoo_dir, resources_dir

site = Path(sys.prefix).resolve()
assert Path(app.__file__).resolve().is_relative_to(site), f"app imported from {app.__file__}"
cards = sorted(p.name for p in model_zoo_dir().glob("*.json"))
assert cards, f"no model cards in {model_zoo_dir()}"
assert (resources_dir() / "maskloop.desktop").is_file(), f"no resources in {resources_dir()}"
print(f"app: {app.__file__}\nmodel cards in {model_zoo_dir()}: {', '.join(cards)}")
EOF

step "maskloop --version"
"$ml" --version

step "maskloop models"
"$ml" models | tee "$work/models.txt"
for card in "$work"/venv/lib/python*/site-packages/app/_data/model_zoo/*.json; do
    id="$(basename "$card" .json)"
    grep -q -- "$id" "$work/models.txt" || { echo "'maskloop models' does not list $id" >&2; exit 1; }
done

step "maskloop demo"
rm -rf "$work/demo"
"$ml" demo "$work/demo" --images 4 --done 2

step "maskloop info"
"$ml" info "$work/demo"

step "maskloop screenshot"
"$ml" screenshot "$work/demo" --out "$work/screenshot.png" --size 1200x800

printf '\nclean install check passed in %s s (venv: %s)\n' "$SECONDS" "$(du -sh "$work/venv" | cut -f1)"
