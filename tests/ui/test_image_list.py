"""Image names relative to the images' shared folder, and the uncertainty labelled on images
still to review only."""

from __future__ import annotations

from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus
from app.ui.panels.image_list import ImageListPanel, common_folder


def test_common_folder():
    assert common_folder(["../imgs/a.tif", "../imgs/sub/b.png"]) == "../imgs/"
    assert common_folder(["a.png", "imgs/b.png"]) == ""
    assert common_folder([]) == ""


def test_names_under_the_shared_folder_and_uncertainty_only_to_review(qtbot, tmp_path):
    with ProjectStore.open(tmp_path / "p", create=True) as store:
        a, b = store.add_images(
            [NewImage("../imgs/img2d.tif", 10, 10), NewImage("../imgs/sub/c.png", 10, 10)]
        )
        store.set_uncertainty(a, 16.03)
        store.set_uncertainty(b, 3.0)
        store.set_image_status(b, ImageStatus.DONE)
        panel = ImageListPanel(store)
        qtbot.addWidget(panel)
        texts = [panel.list.item(r).text() for r in range(panel.list.count())]
        assert texts == ["img2d.tif  \u2013 16.0 expected fixes", "sub/c.png"]
        tip = panel.list.item(0).toolTip()
        assert "img2d.tif" in tip and "corrections the model expects" in tip
        store.set_image_status(a, ImageStatus.DONE)
        panel.update_status(a)
        assert panel.list.item(0).text() == "img2d.tif"
