"""The demo project: files, store contents, ground truth, reopening and refusals."""

import json

import numpy as np
import pytest

from app.core.geometry import polygons_to_mask
from app.core.images import read_image
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Source
from app.demo.project import DEMO_META_KEY, DemoError, create_demo_project
from app.demo.synthetic import generate_sample, sample_seed

SIZE = (96, 128)  # (height, width)


@pytest.fixture
def demo(tmp_path):
    store = create_demo_project(
        tmp_path / "demo", n_images=3, n_done=2, seed=4, size=SIZE, real=False
    )
    yield store
    store.close()


def test_demo_has_mixed_formats_sizes_and_statuses(demo):
    images = demo.images()
    assert [r.path for r in images] == [
        "images/nuclei_000.png",
        "images/nuclei_001.tif",
        "images/nuclei_002.png",
    ]
    assert all((r.width, r.height) == (128, 96) for r in images)
    assert read_image(demo.abspath(images[0])).dtype == np.uint8
    assert read_image(demo.abspath(images[1])).dtype == np.uint16
    assert [r.status for r in images] == [ImageStatus.DONE, ImageStatus.DONE, ImageStatus.NEW]
    assert [c.name for c in demo.categories()] == ["nucleus"]
    assert json.loads(demo.get_meta(DEMO_META_KEY))["n_images"] == 3


def test_done_images_carry_the_ground_truth(demo):
    category = demo.categories()[0]
    for index, record in enumerate(demo.images()[:2]):
        truth = generate_sample(sample_seed(4, index), size=SIZE, bit_depth=8 + 8 * (index % 2))
        instances = demo.instances(record.id)
        assert len(instances) == truth.n_instances
        assert all(i.source == Source.HUMAN and i.category_id == category.id for i in instances)
        drawn = np.zeros(SIZE, dtype=bool)
        for inst in instances:
            drawn |= polygons_to_mask(inst.polygons, *SIZE)
        union = truth.labels > 0
        iou = (drawn & union).sum() / (drawn | union).sum()
        assert iou > 0.9
        assert np.array_equal(read_image(demo.abspath(record)), truth.image)
    assert demo.instances(demo.images()[2].id) == []


def test_an_existing_demo_is_opened_as_it_is(tmp_path):
    folder = tmp_path / "demo"
    create_demo_project(folder, n_images=2, n_done=1, size=SIZE).close()
    with create_demo_project(folder, n_images=5, n_done=5, size=SIZE) as store:
        assert store.count_images() == 2 + 5  # with the five real images
        assert store.count_images(ImageStatus.DONE) == 1


def test_an_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    with create_demo_project(
        tmp_path / "empty", n_images=1, n_done=0, size=SIZE, real=False
    ) as store:
        assert store.count_images(ImageStatus.NEW) == 1


def test_a_non_empty_folder_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not empty"):
        create_demo_project(folder, n_images=1, size=SIZE)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_real_project_is_refused(tmp_path):
    ProjectStore.create(tmp_path / "proj").close()
    with pytest.raises(DemoError, match="not a demo"):
        create_demo_project(tmp_path / "proj", n_images=1, size=SIZE)


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DemoError, match="is a file"):
        create_demo_project(tmp_path / "f", n_images=1, size=SIZE)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_images": 0}, {"n_images": 2, "n_done": 3}, {"n_done": -1}, {"size": (32, 128)}],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs):
    with pytest.raises(DemoError):
        create_demo_project(tmp_path / "d", **{"size": SIZE, **kwargs})
    assert not (tmp_path / "d").exists()
