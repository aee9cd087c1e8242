"""app.core.images: every supported layout reads back exactly, every bad file fails by name."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from app.core.images import (
    MAX_PIXELS_ENV,
    SUPPORTED_EXTENSIONS,
    ImageReadError,
    PixelLimitSettingError,
    display_range,
    read_image,
    read_image_size,
    select_channels,
    to_display8,
)
from app.errors import MaskLoopError

RNG = np.random.default_rng(0)


def _u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _u16(*shape: int) -> np.ndarray:
    return RNG.integers(0, 65536, size=shape, dtype=np.uint16)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but holds no pixel data (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = _png_chunk(b"IDAT", zlib.compress(bytes(1000)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + idat)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_supported_extensions_are_lower_case_with_dot():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} == SUPPORTED_EXTENSIONS


# -- PNG / BMP / JPEG through Pillow and OpenCV ------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "shape"),
    [(".png", (30, 40)), (".png", (30, 40, 3)), (".png", (30, 40, 4))]
    + [(".bmp", (30, 40)), (".bmp", (30, 40, 3))],
)
def test_8bit_lossless_formats_read_back_exactly(tmp_path, suffix, shape):
    data = _u8(*shape)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(data).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, data)
    assert read_image_size(path) == (40, 30)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_png_keeps_all_bits_and_rgb_order(tmp_path, channels):
    data = _u16(30, 40) if channels == 1 else _u16(30, 40, channels)
    path = tmp_path / "deep.png"
    bgr = data if channels == 1 else data[:, :, [2, 1, 0, 3][:channels]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    out = read_image(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, data)


def test_palette_bilevel_and_gray_alpha_pngs_become_plain_arrays(tmp_path):
    rgb = _u8(10, 12, 3)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (10, 12, 3)

    bits = RNG.integers(0, 2, size=(10, 12)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), bits.astype(np.uint8) * 255)

    gray = _u8(10, 12)
    Image.fromarray(np.dstack([gray, _u8(10, 12)]), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), gray)


def test_jpeg_reads_as_rgb(tmp_path):
    data = np.full((24, 32, 3), (200, 60, 20), np.uint8)
    Image.fromarray(data).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - data).max() <= 3


def _jpeg_with_orientation(path: Path, orientation: int) -> np.ndarray:
    """A 40 wide x 20 high JPEG whose left quarter is white; returns the pixels as stored."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    return stored


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored sideways: turn 90 degrees clockwise to show
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_jpeg_exif_orientation_is_applied_to_pixels_and_size(tmp_path, orientation, expected):
    path = tmp_path / f"o{orientation}.jpg"
    stored = _jpeg_with_orientation(path, orientation)
    want = expected(stored)
    out = read_image(path)
    assert out.shape == want.shape
    assert np.abs(out.astype(int) - want).mean() < 8
    assert read_image_size(path) == (want.shape[1], want.shape[0])


# -- TIFF through tifffile ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        _u8(20, 30),
        _u16(20, 30),
        RNG.normal(size=(20, 30)).astype(np.float32),
        RNG.integers(-1000, 1000, size=(20, 30)).astype(np.int16),
        _u16(20, 30, 3),
    ],
    ids=["u8", "u16", "f32", "i16", "rgb16"],
)
def test_tiff_native_dtype_round_trip(tmp_path, data):
    tifffile.imwrite(tmp_path / "a.tif", data)
    out = read_image(tmp_path / "a.tif")
    assert out.dtype == data.dtype
    np.testing.assert_array_equal(out, data)
    assert read_image_size(tmp_path / "a.tif") == (30, 20)


def test_big_endian_tiff_comes_back_native(tmp_path):
    data = _u16(8, 9)
    tifffile.imwrite(tmp_path / "be.tif", data, byteorder=">")
    out = read_image(tmp_path / "be.tif")
    assert out.dtype == np.dtype(np.uint16) and out.dtype.isnative
    np.testing.assert_array_equal(out, data)


def test_float16_and_bool_tiffs_become_float32_and_uint8(tmp_path):
    tifffile.imwrite(tmp_path / "h.tif", np.full((4, 5), 0.5, np.float16))
    assert read_image(tmp_path / "h.tif").dtype == np.float32
    tifffile.imwrite(tmp_path / "b.tif", np.eye(5, dtype=bool))
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif"), np.eye(5, dtype=np.uint8) * 255)


@pytest.mark.parametrize(
    ("write", "name"),
    [
        (lambda p, a: tifffile.imwrite(p, a), "hwc_shaped"),  # tifffile writes 20 pages of 30x5
        (lambda p, a: tifffile.imwrite(p, a, photometric="minisblack"), "hwc_contig"),
        (lambda p, a: tifffile.imwrite(p, np.moveaxis(a, -1, 0)), "chw_shaped"),
        (
            lambda p, a: tifffile.imwrite(
                p, np.moveaxis(a, -1, 0), imagej=True, metadata={"axes": "CYX"}
            ),
            "chw_imagej",
        ),
    ],
)
def test_multichannel_tiff_comes_back_hwc(tmp_path, write, name):
    data = _u16(20, 30, 5)
    path = tmp_path / f"{name}.tif"
    write(path, data)
    np.testing.assert_array_equal(read_image(path), data)
    assert read_image_size(path) == (30, 20)


def test_planar_rgb_tiff_is_transposed(tmp_path):
    data = _u8(20, 30, 3)
    tifffile.imwrite(
        tmp_path / "p.tif", np.moveaxis(data, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), data)


def test_channels_pick_one_or_three(tmp_path):
    data = _u16(20, 30, 5)
    tifffile.imwrite(tmp_path / "m.tif", data, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "m.tif", channels=[3]), data[:, :, 3])
    np.testing.assert_array_equal(
        read_image(tmp_path / "m.tif", channels=(4, 0, 2)), data[:, :, [4, 0, 2]]
    )
    with pytest.raises(ImageReadError, match="channel 5 does not exist"):
        read_image(tmp_path / "m.tif", channels=[5])
    with pytest.raises(ValueError, match="pick 1 or 3"):
        select_channels(data, [0, 1])
    gray = _u8(4, 5)
    np.testing.assert_array_equal(select_channels(gray, [0, 0, 0]), np.dstack([gray] * 3))


def test_stack_tiff_gives_first_plane_with_a_warning(tmp_path, caplog):
    stack = _u16(20, 40, 50)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "s.tif", stack)  # shaped, 20 planes: more than MAX_CHANNELS
    for name in ("z.tif", "s.tif"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="app.core.images"):
            out = read_image(tmp_path / name)
        np.testing.assert_array_equal(out, stack[0])
        assert "holds 20 images" in caplog.text
        assert read_image_size(tmp_path / name) == (50, 40)


def test_short_leading_axis_of_a_shaped_tiff_is_read_as_channels(tmp_path):
    data = _u16(7, 40, 50)
    tifffile.imwrite(tmp_path / "c.tif", data)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), np.moveaxis(data, 0, -1))


def test_multi_page_tiff_of_different_images_gives_the_first(tmp_path, caplog):
    first = _u8(20, 30)
    with tifffile.TiffWriter(tmp_path / "mp.tif") as tw:
        tw.write(first)
        tw.write(_u8(10, 11))
    with caplog.at_level(logging.WARNING, logger="app.core.images"):
        np.testing.assert_array_equal(read_image(tmp_path / "mp.tif"), first)
    assert "holds 2 images" in caplog.text


def test_lzw_tiff_without_imagecodecs_falls_back_to_pillow(tmp_path):
    data = _u16(20, 30)
    Image.fromarray(data).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), data)


# -- every bad input -------------------------------------------------------------------------


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the reason must contain)."""
    out: dict[str, tuple[Path, str]] = {}
    out["missing"] = (tmp / "nope.png", "does not exist")
    (tmp / "folder.png").mkdir()
    out["folder"] = (tmp / "folder.png", "folder")
    (tmp / "empty.jpg").write_bytes(b"")
    out["empty"] = (tmp / "empty.jpg", "empty (0 bytes)")
    (tmp / "garbage.png").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    out["garbage"] = (tmp / "garbage.png", "not a PNG, JPEG, BMP or TIFF")
    (tmp / "text.tif").write_text("hello, I am not a picture\n")
    out["text"] = (tmp / "text.tif", "not a PNG, JPEG, BMP or TIFF")
    Image.fromarray(_u8(8, 8, 3)).save(tmp / "anim.png", format="GIF")
    out["gif"] = (tmp / "anim.png", "not a PNG, JPEG, BMP or TIFF")

    Image.fromarray(_u8(200, 200, 3)).save(tmp / "t.png")
    out["truncated_png"] = (_truncate(tmp / "t.png"), "truncated")
    Image.fromarray(_u8(200, 200, 3)).save(tmp / "t.jpg")
    out["truncated_jpeg"] = (_truncate(tmp / "t.jpg"), "truncated")
    cv2.imwrite(str(tmp / "t16.png"), _u16(100, 100, 3))
    out["truncated_png16"] = (_truncate(tmp / "t16.png"), "truncated")
    tifffile.imwrite(tmp / "t.tif", _u16(200, 300))
    out["truncated_tiff_data"] = (_truncate(tmp / "t.tif"), "truncated")
    tifffile.imwrite(tmp / "th.tif", _u16(200, 300))
    out["truncated_tiff_header"] = (_truncate(tmp / "th.tif", keep=0.0001), "corrupt")
    tifffile.imwrite(tmp / "tz.tif", _u16(200, 300), compression="zlib")
    out["truncated_tiff_zlib"] = (_truncate(tmp / "tz.tif"), "truncated")
    tifffile.imwrite(tmp / "c.tif", np.ones((4, 4), np.complex64))
    out["complex"] = (tmp / "c.tif", "pixel type complex64 is not supported")
    tifffile.imwrite(tmp / "v.tif", _u8(2, 20, 30, 3), imagej=True, metadata={"axes": "CYXS"})
    out["layout"] = (tmp / "v.tif", "layout CYXS (2, 20, 30, 3) is not supported")
    out["bomb_header"] = (_png_header_only(tmp / "bomb.png", 100_000, 100_000), "limit")
    return out


BAD = [
    "missing",
    "folder",
    "empty",
    "garbage",
    "text",
    "gif",
    "truncated_png",
    "truncated_jpeg",
    "truncated_png16",
    "truncated_tiff_data",
    "truncated_tiff_header",
    "truncated_tiff_zlib",
    "complex",
    "layout",
    "bomb_header",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_file_raises_image_read_error_naming_file_and_reason(tmp_path, name):
    path, words = _bad_files(tmp_path)[name]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert isinstance(info.value, MaskLoopError)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert words in info.value.reason


@pytest.mark.parametrize(
    "name", ["missing", "folder", "empty", "garbage", "text", "gif", "bomb_header"]
)
def test_bad_file_fails_the_header_only_size_read_too(tmp_path, name):
    path, words = _bad_files(tmp_path)[name]
    with pytest.raises(ImageReadError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_image_size(path)


def test_size_read_does_not_decode_pixels(tmp_path):
    Image.fromarray(_u8(120, 160, 3)).save(tmp_path / "t.png")
    _truncate(tmp_path / "t.png")
    assert read_image_size(tmp_path / "t.png") == (160, 120)
    tifffile.imwrite(tmp_path / "t.tif", _u16(50, 70))
    _truncate(tmp_path / "t.tif")
    assert read_image_size(tmp_path / "t.tif") == (70, 50)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_pixel_limit_is_checked_before_decoding(tmp_path, suffix):
    """A truncated file over the limit reports the limit: nothing was decoded."""
    path = tmp_path / f"big{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, _u8(100, 100))
    else:
        Image.fromarray(_u8(100, 100)).save(path)
    _truncate(path)
    with pytest.raises(ImageReadError, match="100 x 100 = 1e\\+04 pixels, more than the limit"):
        read_image(path, max_pixels=9_999)


def test_pixel_limit_from_environment(tmp_path, monkeypatch):
    Image.fromarray(_u8(100, 100)).save(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "5e3")
    with pytest.raises(ImageReadError, match=MAX_PIXELS_ENV):
        read_image(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="limit"):
        read_image_size(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", max_pixels=10_000).shape == (100, 100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(PixelLimitSettingError, match="positive number"):
        read_image(tmp_path / "a.png")


# -- display ---------------------------------------------------------------------------------


def test_uint8_gray_passes_through_and_rgba_loses_alpha():
    gray = _u8(6, 7)
    out = to_display8(gray)
    assert out.shape == (6, 7) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, gray)
    rgba = _u8(6, 7, 4)
    np.testing.assert_array_equal(to_display8(rgba), rgba[:, :, :3])


def test_uint16_is_stretched_by_percentiles():
    ramp = np.linspace(1000, 3000, 200 * 300).astype(np.uint16).reshape(200, 300)
    out = to_display8(ramp, percentiles=(0.0, 100.0))
    assert out[0, 0] == 0 and out[-1, -1] == 255
    mid = to_display8(np.full((2, 2), 2000, np.uint16), low=1000, high=3000)
    assert abs(int(mid[0, 0]) - 128) <= 1


def test_explicit_range_clips_and_gamma_brightens():
    img = np.array([[0, 100, 200, 300, 400]], np.uint16)
    out = to_display8(img, low=100, high=300)[0]
    assert out.tolist() == [0, 0, 128, 255, 255]
    bright = to_display8(img, low=100, high=300, gamma=0.5)[0]
    assert bright[2] > 170
    stretched = to_display8(np.array([[50, 100, 150]], np.uint8), low=50, high=150)[0]
    assert stretched.tolist() == [0, 128, 255]


def test_lookup_table_path_matches_float_maths():
    img = _u16(50, 60)
    a = to_display8(img, low=5000, high=60000, gamma=0.7)
    b = to_display8(img.astype(np.float32), low=5000, high=60000, gamma=0.7)
    assert np.abs(a.astype(int) - b).max() <= 1


def test_float_with_nan_and_constant_images_do_not_break():
    img = RNG.normal(size=(40, 40)).astype(np.float32)
    img[0, 0] = np.nan
    img[1, 1] = np.inf
    out = to_display8(img)
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[1, 1] == 255
    low, high = display_range(img)
    assert np.isfinite(low) and np.isfinite(high) and low < high
    assert to_display8(np.full((3, 3), 7.0, np.float32)).max() == 0
    assert display_range(np.full((3, 3), np.nan, np.float32)) == (0.0, 1.0)


def test_two_and_many_channels_show_as_rgb():
    two = _u16(10, 10, 2)
    out = to_display8(two, low=0, high=65535)
    assert out[:, :, 2].max() == 0 and out[:, :, 0].max() > 0
    many = _u16(10, 10, 6)
    np.testing.assert_array_equal(
        to_display8(many, low=0, high=65535, channels=[5, 1, 0]),
        to_display8(many[:, :, [5, 1, 0]], low=0, high=65535),
    )


def test_display_range_subsamples_large_images_accurately():
    ramp = np.arange(3000 * 3000, dtype=np.float32).reshape(3000, 3000)
    low, high = display_range(ramp, (1.0, 99.0))
    total = ramp.size
    assert abs(low - 0.01 * total) < 0.005 * total
    assert abs(high - 0.99 * total) < 0.005 * total
