"""Synthetic fluorescence-nuclei images with exact instance masks.

They feed the demo project, the tests and the bundled model's training recipe. The bundled
model is judged on real DAPI/Hoechst images it never saw, so the generator aims at the
variety of real data rather than at being easy: irregular and bean-shaped nuclei, small
bright mitotic ones, sizes and densities that vary from image to image, touching and
slightly overlapping neighbours in clumps, chromatin texture, soft and out-of-focus edges,
uneven illumination, unlabelled haze, shot and read noise, 8-bit or 16-bit camera ranges
and dim exposures.

Only numpy and OpenCV: it is cheap enough to generate training data on the fly.

A :class:`Regime` moves images away from those defaults (another microscope, stain or
magnification): the loop benchmark uses :data:`OTHER_MICROSCOPE` so that the bundled model,
trained on the defaults, meets the domain shift a real user's images bring.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from app.errors import MaskLoopError

MIN_VISIBLE_PIXELS = 12
"""Every labelled nucleus keeps at least this many visible pixels (and most of its area)."""

_MAX_CELLS = 400
_RADIUS_RANGE = (4.0, 28.0)
_SUBPIXEL_SHIFT = 4  # cv2.fillPoly fixed-point bits: polygons are drawn at 1/16 px
_SUBPIXEL = float(1 << _SUBPIXEL_SHIFT)


class SyntheticDataError(MaskLoopError, ValueError):
    """A generator argument is out of range."""


@dataclass
class SyntheticSample:
    """One synthetic image and its instance-id map.

    ``image`` is (H, W) uint8 or uint16, one fluorescence channel. ``labels`` is (H, W)
    uint16: 0 is background, nuclei are 1..N in drawing order (later ones cover earlier
    ones where they overlap; the map holds what is visible) and every id is present.
    """

    image: np.ndarray
    labels: np.ndarray

    @property
    def n_instances(self) -> int:
        return int(self.labels.max())


@dataclass
class _ImageStyle:
    """What is shared by all nuclei of one image (one acquisition)."""

    radius_mean: float
    radius_spread: float
    elongation_max: float
    irregularity: float
    kidney_fraction: float
    mitotic_fraction: float
    clump_fraction: float
    blurred_fraction: float
    brightness_spread: float
    texture_amplitude: float
    rim_fraction: float
    edge_sigma: float


@dataclass
class _Cell:
    y0: int
    x0: int
    mask: np.ndarray  # bool, local box
    sigma: float
    brightness: float
    mitotic: bool
    rim: bool
    radius: float


Range = tuple[float, float]


@dataclass(frozen=True)
class Regime:
    """Per-image ranges that replace the generator's defaults (None keeps the default).

    Each is a (low, high) range a value is drawn from uniformly for every image:
    ``elongation`` the longest nucleus' axis ratio (default 1.1-1.9), ``texture`` the
    chromatin contrast (0.03-0.35), ``rim`` the share of nuclei with a bright envelope
    (0, 0.3 or 0.8), ``edge_sigma`` the edge softness in px (0.4-1.2), ``background`` the
    background level relative to a nucleus (0.01-0.12).
    """

    name: str
    elongation: Range | None = None
    texture: Range | None = None
    rim: Range | None = None
    edge_sigma: Range | None = None
    background: Range | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None and not 0.0 <= value[0] <= value[1]:
                raise SyntheticDataError(
                    f"Regime {self.name!r}: {f.name}={value} must be a 0 <= low <= high range."
                )
        if self.elongation is not None and self.elongation[0] < 1.0:
            raise SyntheticDataError(
                f"Regime {self.name!r}: elongation={self.elongation} must be >= 1."
            )

    def restyle(self, rng: np.random.Generator, style: _ImageStyle) -> _ImageStyle:
        """``style`` with this regime's ranges drawn from ``rng`` in place of the defaults."""
        draws = {
            "elongation_max": self.elongation,
            "texture_amplitude": self.texture,
            "rim_fraction": self.rim,
            "edge_sigma": self.edge_sigma,
        }
        changes = {k: float(rng.uniform(*r)) for k, r in draws.items() if r is not None}
        return dataclasses.replace(style, **changes)


OTHER_MICROSCOPE = Regime(
    "other-microscope",
    elongation=(2.0, 2.8),
    texture=(0.45, 0.6),
    rim=(0.9, 1.0),
    edge_sigma=(1.2, 1.6),
    background=(0.15, 0.25),
)
"""Outside the defaults: long, coarsely textured, envelope-stained nuclei with soft edges on
a bright background (e.g. a widefield scope with another stain)."""


def generate_sample(
    seed: int,
    *,
    size: tuple[int, int] = (256, 256),
    bit_depth: int = 8,
    n_cells: int | tuple[int, int] | None = None,
    cell_radius: tuple[float, float] | None = None,
    regime: Regime | None = None,
) -> SyntheticSample:
    """Generate one image of fluorescent nuclei and its label map, deterministic in ``seed``.

    ``size`` is (height, width). ``n_cells`` is how many nuclei to try to place (an int or an
    inclusive (low, high) range; None picks a density from sparse to crowded); a crowded image
    may hold fewer when no room is left. ``cell_radius`` is the (low, high) range the image's
    mean nucleus radius in pixels is drawn from (default 4-28; each image then varies around
    its own mean). ``bit_depth`` 8 gives a uint8 image, 16 a uint16 camera-like image.
    ``regime`` replaces some of the default per-image ranges (see :class:`Regime`); without
    one the output for a seed never changes (the bundled model's recipe depends on it).
    """
    height, width = _check_args(size, bit_depth, n_cells, cell_radius)
    rng = np.random.default_rng(seed)
    style = _draw_style(rng, height, width, cell_radius)
    if regime is not None:
        style = regime.restyle(rng, style)
    target = _draw_cell_count(rng, n_cells, style, height, width)
    labels = np.zeros((height, width), dtype=np.uint16)
    cells = _place_cells(rng, labels, style, target)
    illumination = _illumination(rng, height, width)
    canvas = _render_cells(rng, cells, style, height, width)
    canvas += _haze(rng, height, width, style)
    image = _acquire(rng, canvas, illumination, bit_depth, regime)
    return SyntheticSample(image=image, labels=labels)


def sample_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a set made from ``seed``: independent streams, so a longer
    set with the same seed starts with the same images as a shorter one."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# --- arguments and per-image style -------------------------------------------------------


def _check_args(
    size: tuple[int, int],
    bit_depth: int,
    n_cells: int | tuple[int, int] | None,
    cell_radius: tuple[float, float] | None,
) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 16:
        raise SyntheticDataError(f"Image size must be (height, width) of at least 16, got {size}.")
    if bit_depth not in (8, 16):
        raise SyntheticDataError(f"Bit depth must be 8 or 16, got {bit_depth}.")
    if n_cells is not None:
        low, high = (n_cells, n_cells) if isinstance(n_cells, int) else n_cells
        if not 0 <= low <= high <= 65535:
            raise SyntheticDataError(
                f"Cell count must be 0..65535 (or a low <= high range), got {n_cells}."
            )
    if cell_radius is not None:
        low_r, high_r = cell_radius
        if not 2.0 <= low_r <= high_r <= min(size) / 2:
            raise SyntheticDataError(
                f"Cell radius range must satisfy 2 <= low <= high <= {min(size) / 2}, "
                f"got {cell_radius}."
            )
    return int(size[0]), int(size[1])


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _draw_style(
    rng: np.random.Generator, height: int, width: int, cell_radius: tuple[float, float] | None
) -> _ImageStyle:
    low, high = cell_radius or _RADIUS_RANGE
    high = min(high, max(low, min(height, width) / 6))
    return _ImageStyle(
        radius_mean=_log_uniform(rng, low, high) if high > low else low,
        radius_spread=rng.uniform(0.08, 0.3),
        elongation_max=rng.uniform(1.1, 1.9),
        irregularity=rng.uniform(0.02, 0.09),
        kidney_fraction=rng.choice([0.0, 0.05, 0.15, 0.3]),
        mitotic_fraction=rng.choice([0.0, 0.02, 0.05, 0.1]),
        clump_fraction=rng.uniform(0.0, 0.8),
        blurred_fraction=rng.choice([0.0, 0.05, 0.15]),
        brightness_spread=rng.uniform(0.1, 0.45),
        texture_amplitude=rng.uniform(0.03, 0.35),
        rim_fraction=rng.choice([0.0, 0.3, 0.8]),
        edge_sigma=rng.uniform(0.4, 1.2),
    )


def _draw_cell_count(
    rng: np.random.Generator,
    n_cells: int | tuple[int, int] | None,
    style: _ImageStyle,
    height: int,
    width: int,
) -> int:
    if isinstance(n_cells, int):
        return n_cells
    if n_cells is not None:
        return int(rng.integers(n_cells[0], n_cells[1] + 1))
    coverage = _log_uniform(rng, 0.02, 0.55)
    n = coverage * height * width / (math.pi * style.radius_mean**2)
    return int(np.clip(round(n), 2, _MAX_CELLS))


# --- shapes and placement ----------------------------------------------------------------


def _cell_outline(
    rng: np.random.Generator, radius: float, style: _ImageStyle, mitotic: bool
) -> np.ndarray:
    """A star-shaped outline (N, 2) around the origin: ellipse x low-frequency radial noise."""
    n_points = max(24, int(2 * math.pi * radius / 1.5))
    theta = np.linspace(0.0, 2 * math.pi, n_points, endpoint=False)
    elongation = rng.uniform(1.0, style.elongation_max)
    if mitotic:
        elongation = rng.uniform(1.0, 2.2)
    a, b = radius * math.sqrt(elongation), radius / math.sqrt(elongation)
    phi = rng.uniform(0, 2 * math.pi)
    c, s = np.cos(theta - phi), np.sin(theta - phi)
    r = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
    harmonics = np.arange(2, 7)
    amplitudes = rng.normal(0.0, style.irregularity, harmonics.size) / (harmonics - 1) ** 0.8
    phases = rng.uniform(0, 2 * math.pi, harmonics.size)
    r = r * (
        1.0 + (amplitudes[:, None] * np.cos(harmonics[:, None] * theta + phases[:, None])).sum(0)
    )
    if not mitotic and rng.random() < style.kidney_fraction:
        depth, width = rng.uniform(0.2, 0.45), rng.uniform(0.35, 0.6)
        centre = phi + rng.choice([0.5, 1.5]) * math.pi  # indent a long side
        delta = np.angle(np.exp(1j * (theta - centre)))
        r = r * (1.0 - depth * np.exp(-0.5 * (delta / width) ** 2))
    r = np.maximum(r, 0.3 * radius)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _rasterise(outline: np.ndarray, cy: float, cx: float) -> tuple[int, int, np.ndarray]:
    """Fill the outline centred at (cy, cx); returns the box origin and its bool mask."""
    x0 = int(math.floor(cx + outline[:, 0].min())) - 1
    y0 = int(math.floor(cy + outline[:, 1].min())) - 1
    x1 = int(math.ceil(cx + outline[:, 0].max())) + 2
    y1 = int(math.ceil(cy + outline[:, 1].max())) + 2
    local = np.empty_like(outline)
    local[:, 0] = outline[:, 0] + cx - x0
    local[:, 1] = outline[:, 1] + cy - y0
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    points = np.round(local * _SUBPIXEL).astype(np.int32)
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return y0, x0, mask.astype(bool)


def _clip_box(
    y0: int, x0: int, mask: np.ndarray, height: int, width: int
) -> tuple[int, int, np.ndarray] | None:
    """The part of a box that lies inside the image (None when nothing does)."""
    top, left = max(0, -y0), max(0, -x0)
    bottom = min(mask.shape[0], height - y0)
    right = min(mask.shape[1], width - x0)
    if bottom <= top or right <= left:
        return None
    return y0 + top, x0 + left, mask[top:bottom, left:right]


def _place_cells(
    rng: np.random.Generator, labels: np.ndarray, style: _ImageStyle, target: int
) -> list[_Cell]:
    """Draw nuclei into ``labels`` one by one; returns them in drawing order (id = index + 1).

    A candidate is rejected if it would hide too much of an earlier nucleus or of itself, or
    if too little of it lies inside the image, so every id stays clearly visible.
    """
    height, width = labels.shape
    cells: list[_Cell] = []
    centres: list[tuple[float, float, float]] = []
    full_area: list[int] = []
    visible: list[int] = []
    attempts = 0
    while len(cells) < target and attempts < 12 * target + 20:
        attempts += 1
        mitotic = rng.random() < style.mitotic_fraction
        radius = style.radius_mean * math.exp(rng.normal(0.0, style.radius_spread))
        if mitotic:
            radius *= rng.uniform(0.45, 0.7)
        radius = max(radius, 2.5)
        if centres and rng.random() < style.clump_fraction:
            ny, nx, nr = centres[int(rng.integers(len(centres)))]
            angle = rng.uniform(0, 2 * math.pi)
            distance = (nr + radius) * rng.uniform(0.8, 1.08)
            cy, cx = ny + distance * math.sin(angle), nx + distance * math.cos(angle)
        else:
            margin = 0.4 * radius
            cy = rng.uniform(-margin, height + margin)
            cx = rng.uniform(-margin, width + margin)
        outline = _cell_outline(rng, radius, style, mitotic)
        y0, x0, mask = _rasterise(outline, cy, cx)
        area = int(mask.sum())
        clipped = _clip_box(y0, x0, mask, height, width)
        if clipped is None:
            continue
        cy0, cx0, inside = clipped
        inside_area = int(inside.sum())
        if inside_area < max(MIN_VISIBLE_PIXELS, 0.4 * area):
            continue
        window = labels[cy0 : cy0 + inside.shape[0], cx0 : cx0 + inside.shape[1]]
        covered = window[inside]
        counts = np.bincount(covered, minlength=len(cells) + 1)
        if counts[1:].sum() > 0.2 * area:
            continue
        hit = np.nonzero(counts[1:])[0]
        if any(
            visible[j] - counts[j + 1] < max(MIN_VISIBLE_PIXELS, 0.7 * full_area[j]) for j in hit
        ):
            continue
        for j in hit:
            visible[j] -= int(counts[j + 1])
        window[inside] = len(cells) + 1
        blurred = rng.random() < style.blurred_fraction
        cells.append(
            _Cell(
                y0=y0,
                x0=x0,
                mask=mask,
                sigma=rng.uniform(1.8, 3.5)
                if blurred
                else style.edge_sigma * rng.uniform(0.7, 1.3),
                brightness=math.exp(rng.normal(0.0, style.brightness_spread))
                * (rng.uniform(1.6, 2.8) if mitotic else 1.0)
                * (rng.uniform(0.45, 0.75) if blurred else 1.0),
                mitotic=mitotic,
                rim=rng.random() < style.rim_fraction,
                radius=radius,
            )
        )
        centres.append((cy, cx, radius))
        full_area.append(inside_area)
        visible.append(inside_area)
    return cells


# --- rendering -----------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise with features about ``scale`` pixels wide."""
    h, w = shape
    gh = max(2, int(math.ceil(h / max(scale, 1.0))) + 1)
    gw = max(2, int(math.ceil(w / max(scale, 1.0))) + 1)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _cell_intensity(rng: np.random.Generator, cell: _Cell, style: _ImageStyle) -> np.ndarray:
    """The nucleus' brightness over its (padded) box: flat-topped dome, rim, chromatin spots."""
    mask8 = cell.mask.astype(np.uint8)
    dist = cv2.distanceTransform(mask8, cv2.DIST_L2, 3)
    depth = max(float(dist.max()), 1.0)
    profile = 0.6 + 0.4 * np.minimum(1.0, dist / (0.45 * depth)) ** 0.7
    if cell.rim:
        profile += 0.3 * np.exp(-dist / 1.5) * (dist > 0)
    texture_scale = max(1.2, cell.radius / rng.uniform(2.5, 5.0))
    amplitude = style.texture_amplitude * (1.8 if cell.mitotic else 1.0)
    texture = 1.0 + amplitude * _smooth_noise(rng, mask8.shape, texture_scale)
    if not cell.mitotic and cell.radius > 6 and rng.random() < 0.5:
        texture *= _nucleoli(rng, cell, dist, depth)
    return (cell.brightness * profile * np.maximum(texture, 0.2)).astype(np.float32)


def _nucleoli(rng: np.random.Generator, cell: _Cell, dist: np.ndarray, depth: float) -> np.ndarray:
    """1-3 darker (DNA-poor) round spots well inside the nucleus."""
    h, w = dist.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inner = np.argwhere(dist > 0.5 * depth)
    factor = np.ones((h, w), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        y, x = inner[int(rng.integers(len(inner)))]
        r = cell.radius * rng.uniform(0.12, 0.25)
        spot = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r))
        factor *= 1.0 - rng.uniform(0.2, 0.5) * spot
    return factor


def _render_cells(
    rng: np.random.Generator, cells: list[_Cell], style: _ImageStyle, height: int, width: int
) -> np.ndarray:
    """Composite the nuclei in drawing order; a nucleus dims (not hides) what lies under it."""
    canvas = np.zeros((height, width), dtype=np.float32)
    for cell in cells:
        pad = int(math.ceil(3 * cell.sigma)) + 1
        mask = np.pad(cell.mask, pad)
        padded = _Cell(**{**cell.__dict__, "mask": mask})
        intensity = _cell_intensity(rng, padded, style)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), cell.sigma)
        clipped = _clip_box(cell.y0 - pad, cell.x0 - pad, alpha, height, width)
        if clipped is None:
            continue
        y0, x0, alpha_in = clipped
        top, left = y0 - (cell.y0 - pad), x0 - (cell.x0 - pad)
        h, w = alpha_in.shape
        inten_in = intensity[top : top + h, left : left + w]
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        region *= 1.0 - 0.65 * alpha_in
        region += alpha_in * inten_in
    return canvas


def _haze(rng: np.random.Generator, height: int, width: int, style: _ImageStyle) -> np.ndarray:
    """Unlabelled out-of-focus light: big faint blobs and a few dim blurred specks."""
    haze = np.zeros((height, width), dtype=np.float32)
    if rng.random() < 0.5:
        scale = max(style.radius_mean * rng.uniform(5, 10), max(height, width) / 6)
        field = _smooth_noise(rng, (height, width), scale)
        haze += rng.uniform(0.01, 0.06) * np.clip(field, 0, None)
    n_specks = int(rng.poisson(height * width / 40000 * rng.uniform(0, 2)))
    if n_specks:
        specks = np.zeros((height, width), dtype=np.float32)
        ys = rng.integers(0, height, n_specks)
        xs = rng.integers(0, width, n_specks)
        specks[ys, xs] = rng.uniform(2.0, 8.0, n_specks)
        haze += cv2.GaussianBlur(specks, (0, 0), rng.uniform(1.5, 3.0)) * rng.uniform(0.3, 1.0)
    return haze


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth uneven illumination in (0, 1]: a tilt plus a vignette-like low-frequency field."""
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * math.pi)
    tilt = math.cos(angle) * xx + math.sin(angle) * yy
    field = rng.uniform(0.0, 0.25) * tilt + rng.uniform(0.0, 0.25) * (xx**2 + yy**2)
    field += 0.08 * _smooth_noise(rng, (height, width), max(height, width) / 2)
    field = field - field.min()
    return (1.0 - field / max(float(field.max()), 1e-6) * rng.uniform(0.0, 0.45)).astype(np.float32)


def _acquire(
    rng: np.random.Generator,
    canvas: np.ndarray,
    illumination: np.ndarray,
    bit_depth: int,
    regime: Regime | None,
) -> np.ndarray:
    """Optics and camera: PSF blur, background, shot noise, read noise, offset, quantisation."""
    background = rng.uniform(0.01, 0.12)
    if regime is not None and regime.background is not None:
        background = rng.uniform(*regime.background)
    signal = (canvas + background) * illumination
    signal = cv2.GaussianBlur(signal, (0, 0), rng.uniform(0.4, 1.0))
    dim = rng.random() < 0.2
    photons = _log_uniform(rng, 25, 100) if dim else _log_uniform(rng, 100, 3000)
    electrons = rng.poisson(np.clip(signal, 0, None) * photons).astype(np.float32)
    electrons += rng.normal(0.0, rng.uniform(0.7, 2.5), electrons.shape).astype(np.float32)
    if bit_depth == 8:
        # 8-bit files are rescaled exports: a nucleus lands at 60-210 (12-50 when dim).
        gain = (rng.uniform(12, 50) if dim else rng.uniform(60, 210)) / photons
        offset, top = rng.uniform(0, 8), 255
    else:
        # A 16-bit camera: 0.5-2.5 DN per electron above an offset of 90-500 DN.
        gain = rng.uniform(0.5, 2.5)
        offset, top = rng.uniform(90, 500), 65535
    dn = electrons * gain + offset
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.clip(np.rint(dn), 0, top).astype(dtype)
