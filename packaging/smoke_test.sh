#!/usr/bin/env bash
# Smoke test of a PyInstaller build: does the frozen app start, find its bundled files, run
# the bundled model and render the GUI headless? Run by `make package` after the build, or by hand:
#
#   bash packaging/smoke_test.sh [DIST_DIR]        # default DIST_DIR: dist/maskloop
#
# Set SMOKE_KEEP=DIR to keep the demo project and the screenshot in DIR (to look at them).
# Needs no network, no display and no Python: only the built folder.
set -euo pipefail

dist="${1:-dist/maskloop}"
exe="$dist/maskloop"
[[ -x "$exe" ]] || { echo "smoke test: no executable at $exe (run 'make package' first)" >&2; exit 2; }

if [[ -n "${SMOKE_KEEP:-}" ]]; then
    work="$SMOKE_KEEP"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
export QT_QPA_PLATFORM=offscreen MASKLOOP_NO_NETWORK=1
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
mkdir -p "$HOME"

step() { printf '\n== %s\n' "$*"; }

step "maskloop --version"
version="$("$exe" --version)"
echo "$version"
[[ "$version" == maskloop\ * ]] || { echo "unexpected version output: $version" >&2; exit 1; }

step "bundled files are found through app.paths (frozen: sys._MEIPASS)"
zoo="$(find "$dist" -path '*/model_zoo/*.json' | head -n 1)"
[[ -n "$zoo" ]] || { echo "no model card (model_zoo/*.json) in $dist" >&2; exit 1; }
[[ -f "$(dirname "$(dirname "$zoo")")/resources/maskloop.desktop" ]] \
    || { echo "resources/ is not next to model_zoo/ in $dist" >&2; exit 1; }
"$exe" models | tee "$work/models.txt"
card="$(basename "$zoo" .json)"
grep -q -- "$card" "$work/models.txt" || { echo "'maskloop models' does not list $card" >&2; exit 1; }

step "maskloop demo"
rm -rf "$work/demo"
"$exe" demo "$work/demo" --images 3 --done 1

step "maskloop info"
"$exe" info "$work/demo"

# Inference through the frozen torch/torchvision (their compiled ops, e.g. NMS) with each
# model whose weights are bundled (model_zoo/<id>.pt next to model_zoo/<id>.json).
for weights in "$(dirname "$zoo")"/*.pt; do
    [[ -f "$weights" ]] || { step "maskloop propose: skipped, no bundled weights"; break; }
    id="$(basename "$weights" .pt)"
    step "maskloop propose --model $id"
    "$exe" propose "$work/demo" --model "$id" --device cpu
done

step "maskloop screenshot (offscreen)"
start=$SECONDS
"$exe" screenshot "$work/demo" --out "$work/screenshot.png" --size 1200x800
echo "screenshot took $((SECONDS - start)) s"
[[ "$(head -c 8 "$work/screenshot.png" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] \
    || { echo "$work/screenshot.png is not a PNG" >&2; exit 1; }

printf '\nsmoke test passed: %s (%s)\n' "$dist" "$(du -sh "$dist" | cut -f1)"
