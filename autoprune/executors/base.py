"""Executors map evaluation jobs to results, yielding each result as it finishes.

The run loop journals every result the moment it is yielded, so an executor that runs
jobs in parallel (Ray) and one that runs them in turn (local) lose nothing alike.
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from autoprune.evaluation.evaluator import EvaluationFailed, Evaluator
from autoprune.searchers.base import MEASUREMENT, TRIAL, Result

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """One candidate to score: retrain ``fidelity`` steps with ``seed`` (continuing from
    ``init_state`` when given: the trained weights of a trial at ``init_levels``, narrowed
    to ``levels`` where they differ), score on ``eval_samples`` held-out samples (None: all);
    return the trained weights when ``keep_state``. ``draw`` is the proposal's, echoed in
    the result (``seed`` is already the draw's)."""

    trial_id: int
    levels: np.ndarray
    fidelity: int
    seed: int
    eval_samples: int | None = None
    parent: int | None = None
    draw: int = 0
    init_state: Any = field(default=None, repr=False)
    #: the levels ``init_state`` was trained at (None: ``levels``)
    init_levels: np.ndarray | None = None
    #: the proposal's kind (a trial, or a searcher's measurement); the run loop labels results with it
    kind: str = TRIAL
    keep_state: bool = False


def run_job(evaluator: Evaluator, job: Job) -> Result:
    """Evaluate ``job``; any failure of the candidate becomes a failed result, not a crash."""
    common = {"trial_id": job.trial_id, "levels": job.levels, "fidelity": job.fidelity,
              "eval_samples": job.eval_samples, "parent": job.parent, "draw": job.draw}
    try:
        evaluated = evaluator.run(job.levels, fidelity=job.fidelity, seed=job.seed, eval_samples=job.eval_samples,
                                  init_state=job.init_state, init_levels=job.init_levels,
                                  measurement=job.kind == MEASUREMENT)
        state = {k: v.detach().cpu() for k, v in evaluated.model.state_dict().items()} if job.keep_state else None
        return Result(status="ok", metrics=evaluated.metrics, state=state, **common)
    except EvaluationFailed as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory"
    except Exception as exc:  # a candidate must never stop the run; keep the traceback in the log
        logger.warning("trial %d failed unexpectedly:\n%s", job.trial_id, traceback.format_exc())
        error = f"{type(exc).__name__}: {exc}"
    return Result(status="failed", error=error, **common)


class Executor(ABC):
    """Runs jobs on ``workers`` workers."""

    workers: int = 1

    @abstractmethod
    def run(self, jobs: list[Job]) -> Iterator[Result]:
        """Yield one result per job, in the order they finish."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` where this executor's jobs run: on the device and with the torch
        threads its trials get, for reference measurements that must compare with theirs
        (the dense model's latency). Here: in this process."""
        return fn(*args)

    def utilisation(self) -> dict[str, Any] | None:
        """How busy the workers were (for the run summary); None where it says nothing
        (one in-process worker is busy whenever the run is)."""
        return None

    def close(self) -> None:
        """Release workers."""
