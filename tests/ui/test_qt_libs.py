"""The X11 library check behind `make run` and `maskloop gui`: missing libraries are named
with the packages to install, instead of Qt's abort."""

from __future__ import annotations

import sys

import pytest

from app.ui import qt_libs
from app.ui.qt_libs import QtLibrariesMissingError, check_qt_libraries, package_for, uses_xcb


def test_library_names_become_debian_packages():
    assert package_for("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert package_for("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert package_for("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert package_for("libX11-xcb.so.1") == "libx11-xcb1"
    assert package_for("libEGL.so.1") == "libegl1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 plugin on Linux only")
def test_only_the_x11_platform_is_checked():
    assert uses_xcb({"QT_QPA_PLATFORM": ""}) and uses_xcb({"QT_QPA_PLATFORM": "xcb"})
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"})
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 plugin on Linux only")
def test_missing_libraries_give_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(qt_libs, "xcb_plugin", lambda: tmp_path / "libqxcb.so")
    monkeypatch.setattr(
        qt_libs, "missing_libraries", lambda plugin: ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]
    )
    with pytest.raises(
        QtLibrariesMissingError, match="apt-get install libxcb-cursor0 libxcb-icccm4"
    ):
        check_qt_libraries()
    assert qt_libs.main() == 1
    monkeypatch.setattr(qt_libs, "missing_libraries", lambda plugin: [])
    check_qt_libraries()
    assert qt_libs.main() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 plugin on Linux only")
def test_ldd_reports_on_the_real_plugin():
    plugin = qt_libs.xcb_plugin()
    if plugin is None:
        pytest.skip("this PySide6 has no xcb plugin")
    missing = qt_libs.missing_libraries(plugin)
    assert all(".so" in name for name in missing)
