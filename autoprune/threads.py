"""Torch threads of in-process evaluations, and a warning when other work shares the cores.

torch's intra-op parallelism splits each operation evenly over its threads and waits for
the slowest: one core kept busy by another program stalls every operation, not just one
thread's share. On this project's 2-core machine a default search ran 5 s per trial idle
and 20-33 s beside one single-threaded job (``experiments/results/threads.md`` measures
it); with one thread it stays near its idle speed. So ``--threads`` exists, and a search
that would run torch's default thread count beside busy cores says so before it starts.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LOADAVG = Path("/proc/loadavg")


def local_cpus() -> int:
    """CPUs this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: leave as is), and give
    the caller's setting back afterwards (the API may run inside a notebook)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def others_running(*, samples: int = 5, interval: float = 0.05, source: Path = LOADAVG) -> float | None:
    """How many threads of other programs are running or waiting for a core right now: the
    kernel's instantaneous runnable count (``/proc/loadavg``, which includes this process)
    less one, median of a few samples. None where the kernel does not say (not Linux)."""
    counts = []
    for i in range(samples):
        try:
            running = source.read_text().split()[3].split("/")[0]
            counts.append(int(running) - 1)
        except (OSError, IndexError, ValueError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return max(0.0, statistics.median(counts))


def busy_machine_hint(others: float | None, cpus: int, threads: int) -> str | None:
    """A one-sentence warning when ``threads`` torch threads would share cores with the
    ``others`` busy ones, naming the thread count that leaves them alone; None when they fit."""
    if others is None:
        return None
    busy = math.ceil(others - 0.25)  # a sample's stray short-lived task is not a busy core
    if busy < 1 or threads + busy <= cpus:
        return None
    fits = max(1, cpus - busy)
    if fits >= threads:
        return None
    return (f"other programs keep about {busy} of this machine's {cpus} cores busy, and torch would run "
            f"{threads} threads per evaluation beside them, which can make trials several times slower; "
            f"pass --threads {fits} to leave those cores alone.")


def warn_if_busy(cpus: int) -> None:
    """Log :func:`busy_machine_hint` for torch's current thread count, if it applies."""
    import torch

    hint = busy_machine_hint(others_running(), cpus, torch.get_num_threads())
    if hint:
        logger.warning(hint)
