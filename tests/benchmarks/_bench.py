"""Helpers shared by the benchmarks: timing and the one JSON line per case (:func:`emit`)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def env_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def timeit(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, max(0, round(0.95 * (len(s) - 1))))]
    return {"median": statistics.median(s), "p95": p95, "n": len(s)}


def emit(
    name: str,
    ours: list[float],
    *,
    unit: str = "s",
    baseline: list[float] | None = None,
    baseline_name: str | None = None,
    target: str | None = None,
    higher_is_better: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Print and return one benchmark JSON line.

    ``ratio`` is how many times better ours is than the baseline: baseline/ours for times,
    ours/baseline for rates (``higher_is_better``).
    """
    line: dict[str, Any] = {"benchmark": name, "unit": unit, "ours": summary(ours)}
    if baseline is not None:
        b = statistics.median(baseline)
        o = line["ours"]["median"]
        line["baseline"] = {"name": baseline_name, "median": b}
        line["ratio"] = (o / b if higher_is_better else b / o) if b and o else None
    if target:
        line["target"] = target
    line.update(extra)
    line["env"] = env_info()
    print(json.dumps(line), flush=True)
    return line
