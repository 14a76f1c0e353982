"""Helpers shared by the benchmark scripts in this folder (run as ``python Testing/benchmarks/NAME.py``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the platform has none): how shared the machine was."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine_info(**extra) -> dict:
    """What every benchmark's JSON says about where it ran, plus ``extra`` (versions of what it measures).

    ``load_avg_1min`` tells how shared the machine was when the numbers were taken.
    """
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count(),
        "load_avg_1min": load_average(),
    }
    torch = sys.modules.get("torch")  # the threads torch really uses, when the benchmark imported it
    if torch is not None:
        info["threads"] = torch.get_num_threads()
    return info | extra


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
