"""The one atomic-write helper: unique temporary names, cleanup on failure, stale cleanup."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from app.core import atomic


def test_concurrent_writers_of_one_target_never_clash(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    writers, rounds = 8, 25
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        start.wait()
        for i in range(rounds):
            try:
                atomic.write_json_atomic(target, {"writer": n, "round": i, "pad": "x" * 4096})
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = json.loads(target.read_text(encoding="utf-8"))  # one writer's whole file
    assert data["pad"] == "x" * 4096 and 0 <= data["writer"] < writers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_temp_names_are_unique_and_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "v1.pt"
    names = {atomic.temp_path(target) for _ in range(100)}
    assert len(names) == 100
    assert all(p.parent == tmp_path and p.name.startswith(".v1.pt.") for p in names)


def test_failed_write_removes_the_temp_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "card.json"
    target.write_text("old", encoding="utf-8")

    def half_then_full_disk(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="space"):
        atomic.write_atomic(target, half_then_full_disk)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_interrupted_rename_removes_the_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.bin"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes_atomic(target, b"data")
    assert list(tmp_path.iterdir()) == []


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above any Linux pid_max
    dead_new = tmp_path / f".last.pt.{dead_pid}-0123456789ab.tmp"
    dead_old = tmp_path / f".last.pt.{dead_pid}.tmp"  # the name before the random part
    mine = atomic.temp_path(tmp_path / "last.pt")  # this process: maybe another thread
    other_target = tmp_path / f".other.pt.{dead_pid}.tmp"
    for p in (dead_new, dead_old, mine, other_target):
        p.write_bytes(b"half")
    assert atomic.remove_stale_temps(tmp_path, {"last.pt"}) == 2
    assert not dead_new.exists() and not dead_old.exists()
    assert mine.exists() and other_target.exists()


@pytest.mark.skipif(os.name != "posix", reason="pid check is POSIX only")
def test_temps_of_a_live_process_are_kept(tmp_path: Path) -> None:
    alive = tmp_path / ".a.json.1-00ff.tmp"  # pid 1 always runs
    alive.write_bytes(b"half")
    assert atomic.remove_stale_temps(tmp_path, {"a.json"}) == 0
    assert alive.exists()
