"""``ray``: evaluate on persistent Ray workers, each result handed back as it finishes.

One actor per GPU (or GPU share), or per CPU slot, lives for the whole run. The dense
model, the data and the search space go to the object store once; each actor builds its
evaluator from them once (:mod:`autoprune.executors.ray_worker`) and then scores a stream
of jobs. ``run`` keeps every ready worker busy: it hands one job to each idle worker,
waits for whichever finishes first (``ray.wait``), hands that worker the next job, and
only then yields the result, so the run loop journals while the workers keep working.

Faults: a worker process that dies mid-job (killed, out of memory, node lost) is
replaced by a fresh actor, and its job goes back to the front of the queue for the next
free worker, at most ``max_retries`` times; after that the job becomes a failed result
naming the cause. Retrying is ours rather than Ray's (``max_restarts=0``,
``max_task_retries=0``) so the bound and the reason end up in the journal. Every job
yields exactly one result.

Results do not depend on how many workers there are: a job carries its own seed, and
every worker runs torch with the same number of threads (``cpus_per_worker``).
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from autoprune.errors import UserError
from autoprune.executors.base import Executor, Job, T
from autoprune.executors.ray_cluster import INSTALL_HINT, RaySession, connect, import_ray
from autoprune.executors.ray_worker import EvaluationWorker, RunnerFactory, worker_setup
from autoprune.searchers.base import Result

logger = logging.getLogger(__name__)

#: a worker whose actor fails to start this many times in a row is given up
MAX_START_FAILURES = 3


@dataclass
class _Attempt:
    job: Job
    attempt: int  # 0: the first try
    ref: Any = None  # ObjectRef of the evaluation
    current: bool = True  # False: left over from a run() the caller abandoned; its result is dropped


@dataclass
class _Worker:
    index: int
    actor: Any = None
    ready: Any = None  # ObjectRef of the actor's info() while it starts; None once it runs
    info: dict[str, Any] = field(default_factory=dict)
    task: _Attempt | None = None
    busy_seconds: float = 0.0
    jobs: int = 0
    replaced: int = 0
    start_failures: int = 0
    retired: bool = False

    @property
    def idle(self) -> bool:
        return self.ready is None and self.task is None and not self.retired


class RayExecutor(Executor):
    """Runs jobs on ``workers`` persistent Ray actors (see the module docstring)."""

    def __init__(
        self,
        *,
        factory: RunnerFactory,
        payload: Any,
        workers: int | None = None,
        address: str | None = None,
        gpus_per_worker: float | None = None,
        threads: int | None = None,
        max_retries: int = 2,
        start_timeout: float = 300.0,
    ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        if not isinstance(start_timeout, (int, float)) or start_timeout <= 0:
            raise ValueError(f"start_timeout must be a positive number of seconds, got {start_timeout!r}")
        self.max_retries = max_retries
        self.start_timeout = float(start_timeout)
        self._ray = import_ray()
        self._closed = False
        self._workers: list[_Worker] = []
        self._by_ref: dict[Any, _Worker] = {}
        self._wall = 0.0
        self._retried = 0
        self._last_start_error = ""
        self.session: RaySession = connect(workers=workers, address=address, gpus_per_worker=gpus_per_worker,
                                           threads=threads)
        try:
            self.workers = self.session.workers
            self._factory = factory
            self._payload = self._ray.put(payload)  # once; every actor, replacements too, reads this object
            self._actor_class = self._ray.remote(EvaluationWorker).options(
                num_cpus=self.session.cpus_per_worker,
                num_gpus=self.session.gpus_per_worker,
                max_restarts=0,
                max_task_retries=0,
            )
            self._workers = [_Worker(index=i) for i in range(self.workers)]
            for worker in self._workers:
                self._spawn(worker)
            self._await_first_worker()
        except BaseException:
            self.close()
            raise
        logger.info("Ray executor: %d worker%s (%s Ray at %s)", self.workers, "" if self.workers == 1 else "s",
                    self.session.mode, self.session.address)

    @classmethod
    def from_evaluator(cls, evaluator: Any, *, workers: int | None = None, address: str | None = None,
                       gpus_per_worker: float | None = None, threads: int | None = None,
                       max_retries: int = 2) -> "RayExecutor":
        """Workers that each build an evaluator like ``evaluator`` (same model, data, space, settings)."""
        factory, payload = worker_setup(evaluator)
        return cls(factory=factory, payload=payload, workers=workers, address=address,
                   gpus_per_worker=gpus_per_worker, threads=threads, max_retries=max_retries)

    # -- running jobs -----------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one running worker (its device and threads), waiting for the result.

        Between runs only: a worker busy with a job would share its cores with ``fn``."""
        if self._closed:
            raise RuntimeError("this RayExecutor is closed")
        if any(w.task is not None for w in self._workers):
            raise RuntimeError("RayExecutor.call while jobs run; call it between runs")
        self._await_first_worker()
        worker = next(w for w in self._workers if w.ready is None and not w.retired)
        try:
            return self._ray.get(worker.actor.call.remote(fn, *args))
        except self._ray.exceptions.RayTaskError as exc:
            raise exc.cause from None  # fn's own error, as if called here
        except self._ray.exceptions.RayError as exc:
            raise UserError(f"a Ray worker died during a reference measurement ({_summary(exc)}); "
                            "check the worker node's memory and logs, then start again.") from None

    def run(self, jobs: list[Job]) -> Iterator[Result]:
        """Yield one result per job, in the order they finish."""
        if self._closed:
            raise RuntimeError("this RayExecutor is closed")
        queue = deque(_Attempt(job=job, attempt=0) for job in jobs)
        outstanding = len(queue)
        started = time.perf_counter()
        try:
            while outstanding:
                self._dispatch(queue)
                result = self._next_event(queue)
                if result is not None:
                    outstanding -= 1
                    self._dispatch(queue)  # the freed worker starts on the next job before the caller journals
                    yield result
        finally:
            self._wall += time.perf_counter() - started
            for worker in self._workers:  # abandoned mid-way: what still runs is dropped when it finishes
                if worker.task is not None:
                    worker.task.current = False

    def _dispatch(self, queue: deque[_Attempt]) -> None:
        for worker in self._workers:
            if not queue:
                return
            if worker.idle:
                task = queue.popleft()
                task.ref = worker.actor.evaluate.remote(task.job)
                worker.task = task
                self._by_ref[task.ref] = worker

    def _next_event(self, queue: deque[_Attempt]) -> Result | None:
        """Wait for one evaluation to finish or one worker to start; a result to hand on, if any."""
        refs = list(self._by_ref)
        if not refs:
            raise RuntimeError("no Ray worker is running or starting")
        working = any(w.task is not None for w in self._workers)
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=None if working else self.start_timeout)
        if not ready:
            raise UserError(
                f"no Ray worker could start within {self.start_timeout:g} s: each needs {self._needs()}, and the "
                f"cluster has {self.session.resources}; add resources or ask for fewer --workers."
            )
        worker = self._by_ref.pop(ready[0])
        if worker.ready is ready[0]:
            self._on_started(worker)
            return None
        return self._on_finished(worker, queue)

    def _on_finished(self, worker: _Worker, queue: deque[_Attempt]) -> Result | None:
        ray = self._ray
        task, worker.task = worker.task, None
        if task is None:
            raise RuntimeError(f"Ray worker {worker.index} finished a job it was never given")
        try:
            result, seconds = ray.get(task.ref)
        except ray.exceptions.RayTaskError as exc:  # the runner itself raised: not the worker's death
            if not task.current:
                return None
            return self._failed(task.job, f"the Ray worker raised {type(exc.cause).__name__}: {exc.cause}")
        except ray.exceptions.RayError as exc:  # the process died: killed, out of memory, node lost
            reason = self._death_reason(worker, exc)
            self._replace(worker)
            if not task.current:
                return None
            if task.attempt < self.max_retries:
                self._retried += 1
                logger.warning("trial %d: %s; running it again (retry %d of %d)", task.job.trial_id, reason,
                               task.attempt + 1, self.max_retries)
                queue.appendleft(_Attempt(job=task.job, attempt=task.attempt + 1))
                return None
            return self._failed(task.job, f"its Ray worker died {task.attempt + 1} times; the last time: {reason}")
        worker.busy_seconds += seconds
        worker.jobs += 1
        return result if task.current else None

    @staticmethod
    def _failed(job: Job, error: str) -> Result:
        return Result(trial_id=job.trial_id, levels=job.levels, fidelity=job.fidelity, status="failed",
                      error=error, eval_samples=job.eval_samples, parent=job.parent, draw=job.draw)

    @staticmethod
    def _death_reason(worker: _Worker, exc: Exception) -> str:
        where = f"worker {worker.index}, pid {worker.info.get('pid', '?')} on {worker.info.get('node', '?')}"
        return f"{_summary(exc)} ({where})"

    # -- worker lifecycle ---------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        threads = max(1, int(self.session.cpus_per_worker))
        worker.actor = self._actor_class.remote(self._factory, self._payload, threads)
        worker.ready = worker.actor.info.remote()
        self._by_ref[worker.ready] = worker

    def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        worker.replaced += 1
        worker.info = {}
        self._spawn(worker)

    def _kill(self, worker: _Worker) -> None:
        if worker.actor is not None:
            try:
                self._ray.kill(worker.actor, no_restart=True)
            except Exception:  # already gone, or Ray shut down: nothing left to kill
                pass

    def _on_started(self, worker: _Worker) -> None:
        ray = self._ray
        ref, worker.ready = worker.ready, None
        try:
            worker.info = ray.get(ref)
            worker.start_failures = 0
            return
        except ray.exceptions.RayError as exc:
            self._last_start_error = _summary(exc)
        worker.start_failures += 1
        if worker.start_failures < MAX_START_FAILURES:
            logger.warning("Ray worker %d failed to start (%s); starting it again", worker.index,
                           self._last_start_error)
            self._kill(worker)
            self._spawn(worker)
            return
        logger.warning("Ray worker %d failed to start %d times (%s); going on without it", worker.index,
                       worker.start_failures, self._last_start_error)
        self._kill(worker)
        worker.retired = True
        if all(w.retired for w in self._workers):
            raise UserError(
                f"no Ray worker could start ({self._last_start_error}); every node of the cluster needs autoprune "
                f"and its dependencies installed ({INSTALL_HINT}) and memory "
                "for the dense model and data."
            )

    def _await_first_worker(self) -> None:
        """Return once one worker runs; raise if none can start in time."""
        if not self._await_workers(lambda: any(w.ready is None and not w.retired for w in self._workers),
                                   self.start_timeout):
            raise UserError(
                f"no Ray worker could start within {self.start_timeout:g} s: each needs {self._needs()}, and "
                f"the cluster has {self.session.resources}; add resources or ask for fewer --workers."
            )

    def wait_ready(self, timeout: float | None = None) -> int:
        """Block until every worker has started (or ``timeout`` s passed, or none is left
        starting); return how many run. ``run`` does not need this: it hands jobs to
        workers as they come up. Timings that should leave start-up out do."""
        self._await_workers(lambda: all(w.ready is None for w in self._workers), timeout)
        return sum(1 for w in self._workers if w.ready is None and not w.retired)

    def _await_workers(self, done: Any, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            starting = [w.ready for w in self._workers if w.ready is not None]
            if not starting:
                return False
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = self._ray.wait(starting, num_returns=1, timeout=left)
            if not ready:
                return False
            self._on_started(self._by_ref.pop(ready[0]))
        return True

    def _needs(self) -> str:
        gpus = f" and {self.session.gpus_per_worker:g} GPU" if self.session.gpus_per_worker else ""
        return f"{self.session.cpus_per_worker:g} CPU{gpus}"

    # -- reporting and shutdown -----------------------------------------------------------

    def workers_info(self) -> list[dict[str, Any]]:
        """Each worker's process id, node, state and the trial it is evaluating."""
        return [{
            "worker": w.index,
            "pid": w.info.get("pid"),
            "node": w.info.get("node"),
            "gpu_ids": w.info.get("gpu_ids", []),
            "state": "retired" if w.retired else "starting" if w.ready is not None else "busy" if w.task else "idle",
            "trial_id": w.task.job.trial_id if w.task is not None else None,
        } for w in self._workers]

    def utilisation(self) -> dict[str, Any]:
        """Busy time per worker against the wall time spent in :meth:`run`.

        ``utilisation`` is the fraction of worker-seconds spent evaluating: 1.0 means no
        worker ever waited (for a job, for the driver, or to start)."""
        wall = self._wall
        busy = sum(w.busy_seconds for w in self._workers)
        n = len(self._workers)
        return {
            "executor": "ray",
            "ray": self.session.mode,
            "address": self.session.address,
            "workers": n,
            "wall_seconds": wall,
            "busy_seconds": busy,
            "utilisation": busy / (n * wall) if n and wall > 0 else 0.0,
            "jobs": sum(w.jobs for w in self._workers),
            "retried": self._retried,
            "replaced": sum(w.replaced for w in self._workers),
            "per_worker": [{
                "worker": w.index,
                "node": w.info.get("node"),
                "jobs": w.jobs,
                "busy_seconds": w.busy_seconds,
                "utilisation": w.busy_seconds / wall if wall > 0 else 0.0,
                "replaced": w.replaced,
            } for w in self._workers],
        }

    def close(self) -> None:
        """Kill our actors; shut Ray down if we started it, disconnect if we joined it."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        for worker in self._workers:
            self._kill(worker)
        self._by_ref.clear()
        self._payload = None
        session = getattr(self, "session", None)
        if session is not None and session.owns_connection and ray.is_initialized():
            ray.shutdown()
        if session is not None and session.reaper is not None:
            session.reaper.close()  # ends what shutdown left of our instance

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary(exc: BaseException) -> str:
    """One line on why a worker died or could not start, out of Ray's many-line messages."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    name = type(exc).__name__
    if getattr(exc, "actor_init_failed", False) and lines:  # the traceback's last line names the error
        return f"{name}: its constructor raised {lines[-1]}"
    exit_type = re.search(r"Worker exit type: (\w+)", text)
    first = lines[0] if lines else ""
    return f"{name}: {first}" + (f" (exit type {exit_type.group(1)})" if exit_type else "")
