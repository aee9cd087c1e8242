"""import-coco's work in the store grows linearly with the number of categories.

Measured in SQLite virtual-machine steps (deterministic, unlike time): matching by
scanning the category table per category was quadratic (10,000 categories took minutes
inside the write transaction, and a concurrent writer timed out meanwhile).
"""

import json
from pathlib import Path

from app.core.coco import import_coco
from app.core.store import ProjectStore

STEP = 100  # VM instructions per progress callback


def _sqlite_steps(tmp_path: Path, n: int) -> int:
    path = tmp_path / f"c{n}.json"
    cats = [{"id": k, "name": f"class {k}"} for k in range(1, n + 1)]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    calls = [0]

    def count() -> int:
        calls[0] += 1
        return 0

    with ProjectStore.open(tmp_path / f"p{n}", create=True) as store:
        store.add_category("already here", id=n + 1)
        store._conn.set_progress_handler(count, STEP)
        report = import_coco(store, path, images_root=tmp_path)
        store._conn.set_progress_handler(None, STEP)
        assert len(report.categories_added) == n and len(store.categories()) == n + 1
    return calls[0]


def test_category_matching_is_linear(tmp_path):
    small, large = _sqlite_steps(tmp_path, 250), _sqlite_steps(tmp_path, 2000)
    assert large / small < 8 * 2, (small, large)  # 8x the categories; quadratic gives ~64x
