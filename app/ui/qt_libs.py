"""Before Qt starts on X11: are the system libraries its xcb plugin needs installed?

Without them Qt aborts with "Could not load the Qt platform plugin xcb" and a core dump;
here the missing libraries are found with ``ldd`` on the plugin and named as the Debian /
Ubuntu packages to install, so ``maskloop gui`` and ``make run`` can say what to do.
``python -m app.ui.qt_libs`` prints the command and exits 1 when something is missing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from app.errors import MaskLoopError

log = logging.getLogger(__name__)

# What the xcb plugin links on a typical Debian/Ubuntu desktop, named as their packages.
XCB_PACKAGES = (
    "libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 "
    "libxcb-shape0 libxcb-xkb1 libxcb-randr0 libxcb-xfixes0 libxcb-sync1 libxkbcommon-x11-0"
).split()


class QtLibrariesMissingError(MaskLoopError):
    """Qt's X11 plugin cannot load: system libraries are missing."""


def package_for(soname: str) -> str:
    """The Debian package that ships a library: libxcb-icccm.so.4 -> libxcb-icccm4,
    libxkbcommon-x11.so.0 -> libxkbcommon-x11-0 (Debian's library package naming)."""
    match = re.fullmatch(r"(.+?)\.so\.(\d+).*", soname)
    if match is None:
        return soname
    name, major = match.group(1).lower(), match.group(2)
    return f"{name}-{major}" if name[-1].isdigit() else f"{name}{major}"


def xcb_plugin() -> Path | None:
    from PySide6.QtCore import QLibraryInfo  # QtCore loads without any X11 library

    folder = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    plugin = folder / "libqxcb.so"
    return plugin if plugin.exists() else None


def missing_libraries(plugin: Path) -> list[str]:
    """Libraries ``plugin`` needs that the dynamic loader cannot find ([] if ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, check=False).stdout
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line})


def uses_xcb(environ: dict[str, str] | None = None) -> bool:
    """Qt will pick its X11 plugin: Linux, no other platform asked for, not on Wayland."""
    env = os.environ if environ is None else environ
    platform = env.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux"):
        return False
    return platform == "xcb" or (platform == "" and not env.get("WAYLAND_DISPLAY"))


def check_qt_libraries() -> None:
    """Raise :class:`QtLibrariesMissingError` with the install command if Qt would abort."""
    if not uses_xcb():
        return
    plugin = xcb_plugin()
    if plugin is None:
        return
    missing = missing_libraries(plugin)
    if missing:
        packages = sorted({package_for(m) for m in missing})
        raise QtLibrariesMissingError(
            f"Qt's X11 plugin needs system libraries that are not installed ({', '.join(missing)}). "
            f"Install them with: sudo apt-get install {' '.join(packages)}  "
            f"(all Qt needs on Debian/Ubuntu: sudo apt-get install {' '.join(XCB_PACKAGES)}; "
            "other distributions: the packages providing these libraries)"
        )


def main() -> int:
    try:
        check_qt_libraries()
    except QtLibrariesMissingError as exc:
        print(f"maskloop: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
