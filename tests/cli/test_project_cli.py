import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from app import __version__
from app.cli import main
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(folder / "sub" / "b.png"), np.zeros((50, 60), np.uint8))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "init" in capsys.readouterr().out


def test_init_then_rescan_then_info(tmp_path, images, capsys):
    project = tmp_path / "proj"
    assert main(["init", str(project), "--images", str(images), "--category", "cell"]) == 0
    out = capsys.readouterr().out
    assert "2 added" in out and "unreadable: 1" in out and "broken.png" in out
    assert main(["init", str(project), "--images", str(images)]) == 0
    assert "0 added, 2 already there" in capsys.readouterr().out
    (images / "a.png").unlink()
    assert main(["init", str(project), "--images", str(images)]) == 0
    assert "1 missing" in capsys.readouterr().out
    assert main(["info", str(project), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"]["new"] == 1 and info["missing_images"] == 1
    assert [c["name"] for c in info["categories"]] == ["cell"]
    with ProjectStore.open(project) as store:
        assert sorted(r.path for r in store.images(include_missing=True)) == [
            "../imgs/a.png",
            "../imgs/sub/b.png",
        ]
    assert info["proposal_outcomes"] == []
    assert main(["info", str(project)]) == 0
    assert "images: 1" in capsys.readouterr().out


def test_info_shows_how_proposals_were_treated(tmp_path, images, capsys):
    from app.core.types import Instance, Polygon

    project = tmp_path / "proj"
    main(["init", str(project), "--images", str(images)])
    with ProjectStore.open(project) as store:
        image = store.images()[0]
        square = Polygon([[0, 0], [4, 0], [4, 4], [0, 4]])
        store.replace_proposals(image.id, [Instance(1, [square]), Instance(1, [square])], 2)
        store.apply_edit(image.id, delete=[store.instances(image.id)[0].id])
    capsys.readouterr()
    assert main(["info", str(project)]) == 0
    assert "v2: accepted=0 edited=0 rejected=1 pending=1" in capsys.readouterr().out


def test_info_counts_how_the_outlines_were_made(tmp_path, images, capsys):
    from app.core.types import Instance, Polygon, Provenance

    project = tmp_path / "proj"
    main(["init", str(project), "--images", str(images)])
    square = Polygon([[0, 0], [4, 0], [4, 4], [0, 4]])
    with ProjectStore.open(project) as store:
        a, b = (im.id for im in store.images())
        store.replace_proposals(a, [Instance(1, [square]), Instance(1, [square])], None)
        made = [Provenance.ASSISTED] * 3 + [Provenance.DRAWN]
        store.add_instances(b, [Instance(1, [square], provenance=p) for p in made])
    capsys.readouterr()
    assert main(["info", str(project), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["provenance"] == {
        "proposal": 2, "assisted": 3, "drawn": 1, "edited": 0, "imported": 0
    }  # fmt: skip
    assert main(["info", str(project)]) == 0
    out = capsys.readouterr().out
    assert (
        "outlines: 2 proposals kept as is, 3 assisted, 1 drawn by hand, 0 edited, 0 imported; "
        "assists made 75% of the outlines a person added"
    ) in out


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "not a MaskLoop project" in err and "Traceback" not in err
    assert main(["init", str(tmp_path / "p"), "--images", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, "main.py", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("maskloop ")


def test_next_prints_most_uncertain_first(tmp_path, images, capsys):
    project = tmp_path / "proj"
    assert main(["init", str(project), "--images", str(images)]) == 0
    with ProjectStore.open(project) as store:
        low, high = store.images()
        store.set_uncertainty(low.id, 0.1)
        store.set_uncertainty(high.id, 0.8)
    capsys.readouterr()
    assert main(["next", str(project)]) == 0
    assert "No image is done yet: a random sample" in capsys.readouterr().out
    with ProjectStore.open(project) as store:
        store.add_images([NewImage("labelled.png", 8, 8)])
        store.set_image_status(store.images()[-1].id, ImageStatus.DONE)
    assert main(["next", str(project), "--count", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [high.id, low.id]
    assert main(["next", str(project), "--strategy", "random"]) == 0
    assert "imgs/" in capsys.readouterr().out


def test_concurrent_inits_of_a_new_folder_all_succeed(tmp_path, images):
    """Each run checks and adds the default category under the write lock."""
    project = tmp_path / "shared"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "init", str(project), "--images", str(images)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    with ProjectStore.open(project) as store:
        assert [c.name for c in store.categories()] == ["object"] and store.count_images() == 2
