"""A ready-to-review demo project of synthetic and real nuclei (``maskloop demo``).

It shows the whole loop offline: a few synthetic images already carry ground truth and are
marked done (training data, a validation split), the rest are new and wait for the bundled
model's proposals. Synthetic images alternate between 8-bit PNG and 16-bit TIFF so both
display paths are exercised; a handful of real DSB2018 images (CC0, shipped in
``resources/demo_real``, see its README) show the model on real fluorescence and brightfield.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from app.core.geometry import label_map_to_instances
from app.core.scan import scan_folder
from app.core.store import DB_NAME, ProjectStore
from app.core.types import ImageStatus, Instance, Source
from app.demo.synthetic import SyntheticSample, generate_sample, sample_seed
from app.errors import MaskLoopError
from app.paths import resources_dir

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
REAL_IMAGES_DIR = "demo_real"  # under resources/
CATEGORY = "nucleus"
CATEGORY_COLOR = "#3cb44b"
DEMO_META_KEY = "demo"


class DemoError(MaskLoopError):
    """The demo project cannot be made where or how it was asked."""


@dataclass(frozen=True)
class DemoParams:
    """How a demo project was made; stored in the project so it can be recognised later."""

    n_images: int
    n_done: int
    seed: int
    size: tuple[int, int]  # (height, width)
    real_images: int = 0  # real images copied from resources/demo_real (left new)


def create_demo_project(
    folder: Path,
    *,
    n_images: int = 12,
    n_done: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (512, 512),
    real: bool = True,
) -> ProjectStore:
    """Make a demo project in ``folder`` (new or empty) and return it open.

    ``size`` is (height, width). The first ``n_done`` images (in path order) get their
    ground-truth nuclei as human annotations and status done; the others stay new. A folder
    that already holds a demo project is opened as it is; any other non-empty folder is
    refused so nothing of the user's is mixed in or overwritten. ``real`` adds the shipped
    real images (``real_*.png``, new, after the synthetic ones).
    """
    folder = Path(folder).expanduser()
    existing = _existing_demo(folder)
    if existing is not None:
        log.info("%s already holds a demo project; opening it", folder)
        return existing
    _check(n_images, n_done, size)
    real_files = real_demo_images() if real else []
    params = DemoParams(
        n_images=n_images,
        n_done=n_done,
        seed=seed,
        size=(size[0], size[1]),
        real_images=len(real_files),
    )
    images_dir = folder / IMAGES_DIR
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create {images_dir}: {exc.strerror}") from exc
    labels_by_name: dict[str, np.ndarray] = {}
    for index in range(n_images):
        sample = generate_sample(
            sample_seed(seed, index), size=params.size, bit_depth=8 + 8 * (index % 2)
        )
        name = _write_image(images_dir, index, sample)
        labels_by_name[name] = sample.labels
    for path in real_files:
        try:
            shutil.copyfile(path, images_dir / f"real_{path.name}")
        except OSError as exc:
            raise DemoError(f"cannot copy {path.name} into {images_dir}: {exc.strerror}") from exc
    store = ProjectStore.create(folder)
    try:
        _fill_store(store, images_dir, params, labels_by_name)
    except BaseException:
        store.close()
        raise
    return store


def real_demo_images() -> list[Path]:
    """The real images shipped for the demo (empty if the resources lack them)."""
    folder = resources_dir() / REAL_IMAGES_DIR
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def _check(n_images: int, n_done: int, size: tuple[int, int]) -> None:
    if n_images < 1:
        raise DemoError(f"a demo needs at least 1 image, not {n_images}")
    if not 0 <= n_done <= n_images:
        raise DemoError(f"the number of done images must be 0..{n_images}, not {n_done}")
    if len(size) != 2 or min(size) < 64 or max(size) > 8192:
        raise DemoError(f"demo images must be 64..8192 px on each side, not {size}")


def _existing_demo(folder: Path) -> ProjectStore | None:
    """The demo project in ``folder``, None if the folder is missing or empty; else refuse."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise DemoError(f"{folder} is a file; give a new or empty folder for the demo")
    if not any(folder.iterdir()):
        return None
    if (folder / DB_NAME).is_file():
        store = ProjectStore.open(folder)
        if store.get_meta(DEMO_META_KEY) is not None:
            return store
        store.close()
        raise DemoError(
            f"{folder} already holds a MaskLoop project that is not a demo; "
            "give a new or empty folder for the demo"
        )
    raise DemoError(
        f"{folder} is not empty; give a new or empty folder for the demo so none of "
        "your files are mixed in"
    )


def _write_image(images_dir: Path, index: int, sample: SyntheticSample) -> str:
    """Write 8-bit images as PNG and 16-bit ones as TIFF; returns the file name."""
    if sample.image.dtype == np.uint8:
        name = f"nuclei_{index:03d}.png"
        ok = cv2.imwrite(str(images_dir / name), sample.image)
        if not ok:
            raise DemoError(f"cannot write {images_dir / name}; is the disk full or read-only?")
    else:
        name = f"nuclei_{index:03d}.tif"
        try:
            tifffile.imwrite(images_dir / name, sample.image, compression="zlib")
        except OSError as exc:
            raise DemoError(f"cannot write {images_dir / name}: {exc.strerror}") from exc
    return name


def _fill_store(
    store: ProjectStore,
    images_dir: Path,
    params: DemoParams,
    labels_by_name: dict[str, np.ndarray],
) -> None:
    """Scan the images, add the category and the ground truth, all in one transaction."""
    with store.transaction():
        report = scan_folder(store, images_dir)
        if report.unreadable:
            raise DemoError(f"the demo images could not be read back: {report.unreadable}")
        category = store.add_category(CATEGORY, CATEGORY_COLOR)
        for record in store.images()[: params.n_done]:
            labels = labels_by_name[Path(record.path).name]
            instances = [
                Instance(category_id=category.id, polygons=polygons, source=Source.HUMAN)
                for polygons in label_map_to_instances(labels).values()
            ]
            store.add_instances(record.id, instances)
            store.set_image_status(record.id, ImageStatus.DONE)
        store.set_meta(DEMO_META_KEY, json.dumps(asdict(params)))
