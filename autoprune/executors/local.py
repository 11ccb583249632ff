"""``local``: evaluate in this process, one job after another."""

from __future__ import annotations

from collections.abc import Iterator

from autoprune.evaluation.evaluator import Evaluator
from autoprune.executors.base import Executor, Job, run_job
from autoprune.searchers.base import Result


class LocalExecutor(Executor):
    workers = 1

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def run(self, jobs: list[Job]) -> Iterator[Result]:
        for job in jobs:
            yield run_job(self.evaluator, job)
