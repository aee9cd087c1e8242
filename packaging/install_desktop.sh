#!/usr/bin/env bash
# Add MaskLoop to the Linux desktop menu (for the current user; no root needed).
#
#   bash packaging/install_desktop.sh              # from a source checkout (or `make install-desktop`)
#   bash dist/maskloop/install_desktop.sh          # from the packaged build (copied there)
#   bash packaging/install_desktop.sh --uninstall  # remove the menu entry and icons again
#
# Options:
#   --exec CMD        the maskloop executable the menu entry runs (default: the packaged build
#                     next to this script, else `maskloop` on PATH, else .venv/bin/maskloop)
#   --resources DIR   where maskloop.desktop and icons/ are (default: found next to this script)
#   --uninstall       remove what an earlier run installed
#
# Installs ~/.local/share/applications/maskloop.desktop (Exec set to the absolute path of the
# executable, so the menu works whatever the desktop session's PATH is) and the app icon into
# ~/.local/share/icons/hicolor/{48x48,128x128,256x256,scalable}/apps/ ($XDG_DATA_HOME is
# honoured), then refreshes the menu and icon caches when their tools are installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
apps="$data/applications"
icons="$data/icons/hicolor"
sizes=(48 128 256)
exec_cmd=""
resources=""
uninstall=0

die() { echo "install_desktop: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --exec) exec_cmd="${2:?--exec needs a path}"; shift 2 ;;
        --resources) resources="${2:?--resources needs a folder}"; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done

refresh() {
    if command -v update-desktop-database >/dev/null; then update-desktop-database -q "$apps" || true; fi
    if command -v gtk-update-icon-cache >/dev/null; then gtk-update-icon-cache -q -t "$data/icons/hicolor" || true; fi
}

if [[ $uninstall == 1 ]]; then
    rm -f "$apps/maskloop.desktop" "$icons/scalable/apps/maskloop.svg"
    for s in "${sizes[@]}"; do rm -f "$icons/${s}x${s}/apps/maskloop.png"; done
    refresh
    echo "removed MaskLoop from the desktop menu"
    exit 0
fi

if [[ -z "$resources" ]]; then
    for candidate in "$here/../resources" "$here/_internal/resources" "$here/resources"; do
        if [[ -f "$candidate/maskloop.desktop" ]]; then resources="$candidate"; break; fi
    done
fi
[[ -n "$resources" && -f "$resources/maskloop.desktop" ]] \
    || die "cannot find maskloop.desktop; pass --resources DIR (the resources/ folder)"
resources="$(cd "$resources" && pwd)"

if [[ -z "$exec_cmd" ]]; then
    if [[ -x "$here/maskloop" && ! -d "$here/maskloop" ]]; then
        exec_cmd="$here/maskloop"
    elif command -v maskloop >/dev/null; then
        exec_cmd="$(command -v maskloop)"
    elif [[ -x "$here/../.venv/bin/maskloop" ]]; then
        exec_cmd="$here/../.venv/bin/maskloop"
    else
        die "no maskloop executable found; install MaskLoop first or pass --exec PATH"
    fi
fi
[[ -x "$exec_cmd" ]] || die "$exec_cmd is not an executable"
exec_cmd="$(cd "$(dirname "$exec_cmd")" && pwd)/$(basename "$exec_cmd")"
# The desktop entry spec reserves these characters inside a quoted Exec argument.
[[ "$exec_cmd" != *[\"\`\$\\]* ]] || die "the path $exec_cmd has a quote, \$, \` or \\ in it; move MaskLoop"

mkdir -p "$apps" "$icons/scalable/apps"
sed -e "s|^Exec=maskloop |Exec=\"$exec_cmd\" |" -e "s|^TryExec=.*|TryExec=$exec_cmd|" \
    "$resources/maskloop.desktop" > "$apps/maskloop.desktop"
chmod 644 "$apps/maskloop.desktop"
cp "$resources/icons/maskloop.svg" "$icons/scalable/apps/maskloop.svg"
for s in "${sizes[@]}"; do
    mkdir -p "$icons/${s}x${s}/apps"
    cp "$resources/icons/maskloop-$s.png" "$icons/${s}x${s}/apps/maskloop.png"
done
refresh
echo "installed $apps/maskloop.desktop (runs $exec_cmd) and icons in $icons"
echo "MaskLoop is in your desktop menu under Graphics and Science; remove it with --uninstall"
