"""A writer killed with SIGKILL at random moments never corrupts the project or loses a commit."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from app.core.store import NewImage, ProjectStore

WRITER = textwrap.dedent(
    """
    import sys
    from app.core.store import ProjectStore
    from app.core.types import Instance, Polygon
    store = ProjectStore.open(sys.argv[1])
    n = int(sys.argv[2])
    while True:
        n += 1
        poly = Polygon([[0, 0], [n % 50 + 3, 0], [0, 7]], [])
        store.apply_edit(1, add=[Instance(1, [poly], score=float(n))])
        print(n, flush=True)  # only after the commit returned
    """
)

KILLS = 20


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_edits_keeps_every_committed_edit(tmp_path):
    project = tmp_path / "p"
    with ProjectStore.open(project, create=True) as store:
        store.add_images([NewImage("a.png", 64, 64)])
        store.add_category("cell")
    rng = random.Random(1234)
    acknowledged: set[int] = set()
    counter = 0
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(project), str(counter)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        first = proc.stdout.readline()  # writer is up and has committed once
        assert first, "writer died before its first commit"
        acknowledged.add(int(first))
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged.update(int(line) for line in out.split())
        with ProjectStore.open(project) as store:
            assert store.integrity_ok()
            stored = {int(i.score) for i in store.instances(1)}
        missing = acknowledged - stored
        assert not missing, f"committed edits lost after SIGKILL: {sorted(missing)[:10]}"
        counter = max(stored)
    assert len(acknowledged) > KILLS
