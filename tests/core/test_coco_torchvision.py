"""torchvision reads our COCO export with the masks the project holds."""

import json

import cv2
import numpy as np
import pytest
from mask_checks import mask_iou

from app.core.coco import export_coco
from app.core.geometry import mask_to_polygons, polygons_to_mask
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance

datasets = pytest.importorskip("torchvision.datasets")

H, W = 48, 64


@pytest.mark.parametrize("mode", ["rle", "polygon"])
def test_cocodetection_masks_equal_the_store(tmp_path, mode):
    images = tmp_path / "imgs"
    images.mkdir()
    store = ProjectStore.open(tmp_path / "proj", create=True)
    store.add_category("cell", id=3)
    expected = {}
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), np.full((H, W, 3), 40 * i, np.uint8))
        (iid,) = store.add_images([NewImage(f"../imgs/{i}.png", W, H)])
        insts = []
        for k in range(3):
            m = np.zeros((H, W), np.uint8)
            cv2.ellipse(m, (12 + 18 * k, 14 + 8 * i), (10, 7), 20 * k, 0, 360, 1, -1)
            insts.append(Instance(3, mask_to_polygons(m)))
        saved = store.add_instances(iid, insts)
        store.set_image_status(iid, ImageStatus.DONE)
        expected[f"{i}.png"] = [polygons_to_mask(s.polygons, H, W) for s in saved]
    out = tmp_path / "coco.json"
    export_coco(store, out, segmentation=mode)
    store.close()
    names = {im["id"]: im["file_name"] for im in json.loads(out.read_text())["images"]}
    ds = datasets.wrap_dataset_for_transforms_v2(
        datasets.CocoDetection(str(images), str(out)), target_keys=("image_id", "masks", "labels")
    )
    assert len(ds) == 2
    for idx in range(len(ds)):
        _, target = ds[idx]
        masks = target["masks"].numpy().astype(bool)
        want = expected[names[int(target["image_id"])]]
        assert masks.shape == (3, H, W) and target["labels"].tolist() == [3, 3, 3]
        for got, ref in zip(masks, want, strict=True):
            if mode == "rle":
                assert np.array_equal(got, ref)
            else:
                assert mask_iou(got, ref) >= 0.98
