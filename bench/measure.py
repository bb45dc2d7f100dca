"""What the benchmarks measure the same way: percentiles of timings, and the resident memory of
a server (the gunicorn master and its workers). Used by run.py, soak.py and gpu.py.
"""
from __future__ import annotations

import psutil


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def server_processes(pid: int) -> list[psutil.Process]:
    """The process `pid` (a gunicorn master) and all its descendants (its workers)."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def tree_rss(pid: int) -> tuple[int, set[int]]:
    """Resident bytes of a process and all its descendants, and the descendants' PIDs."""
    processes = server_processes(pid)
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total, {p.pid for p in processes[1:]}
