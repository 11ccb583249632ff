"""Stand-in evaluations for measuring and testing executors without training anything.

A *sleep* evaluation waits a fixed time and returns metrics computed from the level
vector, so what an executor adds on top (scheduling, transfer, journaling) is all that a
timing measures. It can also kill its own worker process on chosen trials (``SIGKILL``,
the way the kernel's out-of-memory killer does), every time or only on the first try,
to exercise fault handling with real process deaths.

Runs in worker processes: importable from the installed package, no torch needed.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoprune.executors.base import Job
from autoprune.executors.ray_worker import JobRunner
from autoprune.searchers.base import Result


@dataclass(frozen=True)
class SleepPayload:
    """``seconds`` per job; ``kill_trials``: trial ids whose evaluation kills its worker;
    with ``kill_once_dir`` only the first attempt does (a marker file per trial there);
    ``fail_to_start``: building the runner raises, as a worker missing a package would."""

    seconds: float = 0.2
    kill_trials: tuple[int, ...] = ()
    kill_once_dir: str | None = None
    fail_to_start: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.seconds, (int, float)) or self.seconds < 0:
            raise ValueError(f"seconds must be a number >= 0, got {self.seconds!r}")


def sleep_runner(payload: SleepPayload) -> JobRunner:
    """A runner that sleeps ``payload.seconds`` per job (see the module docstring)."""
    if payload.fail_to_start:
        raise ModuleNotFoundError("No module named 'a_package_this_worker_lacks'")

    def run(job: Job) -> Result:
        if job.trial_id in payload.kill_trials and _should_kill(payload, job.trial_id):
            os.kill(os.getpid(), signal.SIGKILL)
        started = time.time()
        time.sleep(payload.seconds)
        levels = np.asarray(job.levels, dtype=np.int64)
        sparsity = float(levels.mean()) if levels.size else 0.0
        metrics = {"accuracy": 1.0 / (1.0 + sparsity), "loss": sparsity, "flops_ratio": 1.0 / (1.0 + sparsity),
                   "steps": job.fidelity, "seconds": payload.seconds, "pid": os.getpid(),
                   "started": started, "finished": time.time()}
        return Result(trial_id=job.trial_id, levels=levels, fidelity=job.fidelity, status="ok", metrics=metrics,
                      eval_samples=job.eval_samples, parent=job.parent, draw=job.draw)

    return run


def _should_kill(payload: SleepPayload, trial_id: int) -> bool:
    if payload.kill_once_dir is None:
        return True
    marker = Path(payload.kill_once_dir) / f"killed-{trial_id}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True
