"""The Ray worker: a long-lived process that builds its evaluator once, then scores jobs.

What a worker needs to evaluate (the dense model, the data, the search space) is put in
Ray's object store once by the driver; every worker receives that one object when it is
created and builds its :class:`~autoprune.evaluation.evaluator.Evaluator` from it. After
that only :class:`~autoprune.executors.base.Job` objects (a level vector, a fidelity, a
seed) travel to the worker, and :class:`~autoprune.searchers.base.Result` objects back.

The worker class is plain Python; :mod:`autoprune.executors.ray_executor` turns it into a
Ray actor with the resources it needs, so this module imports without Ray.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.executors.base import Job, run_job
from autoprune.searchers.base import Result
from autoprune.torchvision_compat import make_torchvision_importable

# a worker loads this module before it unpickles its payload, which may import transformers
# (and so torchvision): a CUDA torchvision wheel beside CPU torch must be importable first
make_torchvision_importable()

#: what a worker runs for each job: a job in, a result out (failures as failed results)
JobRunner = Callable[[Job], Result]
#: called once in each worker with the shared payload; returns the worker's runner
RunnerFactory = Callable[[Any], JobRunner]


@dataclass(frozen=True)
class EvaluatorPayload:
    """Everything a worker needs to build an :class:`Evaluator`, shipped once per run.

    ``space`` travels as its dictionary form (the same one ``run.json`` stores).
    """

    dense: Any  # torch.nn.Module
    data: Any  # autoprune.data.base.TaskData
    space: dict[str, Any]
    never_prune: tuple[str, ...]
    config: EvaluatorConfig
    importance: Any = None


def evaluator_runner(payload: EvaluatorPayload) -> JobRunner:
    """The runner of real evaluations: one Evaluator, built once, scoring every job."""
    from autoprune.space.search_space import SearchSpace

    evaluator = Evaluator(dense=payload.dense, data=payload.data, space=SearchSpace.from_dict(payload.space),
                          never_prune=list(payload.never_prune), config=payload.config,
                          importance=payload.importance)

    def run(job: Job) -> Result:
        return run_job(evaluator, job)

    return run


class EvaluationWorker:
    """One worker process: ``evaluate`` jobs one at a time and time how long each took."""

    def __init__(self, factory: RunnerFactory, payload: Any, threads: int) -> None:
        started = time.perf_counter()
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self._run = factory(payload)
        self._info = {
            "pid": os.getpid(),
            "node": _node_address(),
            "gpu_ids": _gpu_ids(),
            "threads": torch.get_num_threads(),
            "start_seconds": time.perf_counter() - started,
        }

    def info(self) -> dict[str, Any]:
        """Process id, node, GPUs and torch threads of this worker (also: "ready")."""
        return dict(self._info)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in this worker, with its device and threads (reference measurements)."""
        return fn(*args)

    def evaluate(self, job: Job) -> tuple[Result, float]:
        """The job's result and the seconds this worker spent on it."""
        started = time.perf_counter()
        result = self._run(job)
        return result, time.perf_counter() - started


def _node_address() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # outside Ray (the class used directly): not worth failing over
        return "local"


def _gpu_ids() -> list[str]:
    try:
        import ray

        return [str(i) for i in ray.get_gpu_ids()]
    except Exception:  # outside Ray
        return []


def worker_setup(evaluator: Any) -> tuple[RunnerFactory, Any]:
    """How a worker builds an evaluator like ``evaluator``: the factory and the payload it is
    shipped. Evaluators other than the image one say so themselves (``worker_setup()``)."""
    own = getattr(evaluator, "worker_setup", None)
    if own is not None:
        return own()
    payload = EvaluatorPayload(dense=evaluator.dense, data=evaluator.data, space=evaluator.space.to_dict(),
                               never_prune=tuple(evaluator.never_prune), config=evaluator.config,
                               importance=evaluator.importance)
    return evaluator_runner, payload
