"""Torch threads of in-process evaluations: as asked, or fewer beside cores other work keeps busy.

torch's intra-op parallelism splits each operation evenly over its threads and waits for
the slowest: one core kept busy by another program stalls every operation, not just one
thread's share. On this project's 2-core machine the default digits search took 0.69 s
per trial with 2 threads alone and 17 s (25x) beside one single-threaded busy program,
while with one thread it took 0.93 s either way (``experiments/results/threads.md``). So
``--threads`` exists, and a search whose user named no thread count looks at the machine
first: beside busy cores it runs with the threads that leave them alone, and says so.
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

from autoprune.errors import UserError

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


def busy_cores(others: float) -> int:
    """Cores kept busy by ``others`` running threads (a stray short-lived task in a sample
    is not a busy core)."""
    return max(0, math.ceil(others - 0.25))


def fitting_threads(others: float | None, cpus: int, threads: int) -> int | None:
    """Fewer torch threads than ``threads`` that leave the ``others`` busy cores alone, or
    None when ``threads`` already fit beside them (or one thread is all there is)."""
    if others is None:
        return None
    busy = busy_cores(others)
    if busy < 1 or threads + busy <= cpus:
        return None
    fits = max(1, cpus - busy)
    return fits if fits < threads else None


def default_threads(cpus: int) -> int | None:
    """Threads for a search whose user named none: torch's own (None) on a quiet machine;
    beside busy cores, the count that leaves them alone, with a warning that says so.

    The asymmetry decides: one thread where two would have fit costs 1.35x on this
    project's machine, two threads beside one busy core cost 25x (``threads.md``)."""
    import torch

    threads = torch.get_num_threads()
    others = others_running()
    fits = fitting_threads(others, cpus, threads)
    if fits is not None:
        logger.warning("other programs keep about %d of this machine's %d cores busy: evaluating with %d torch "
                       "thread%s instead of %d, as torch waits for its slowest thread and sharing a busy core "
                       "can make trials many times slower; pass --threads to choose.",
                       busy_cores(others), cpus, fits, "" if fits == 1 else "s", threads)
    return fits


@contextmanager
def evaluation_threads(threads: int | None) -> Iterator[None]:
    """torch threads for evaluations in this process: ``threads``, or when None torch's
    default, lowered beside busy cores (:func:`default_threads`); given back afterwards."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"threads must be a whole number >= 1, got {threads!r}.")
    with torch_threads(threads if threads is not None else default_threads(local_cpus())):
        yield
