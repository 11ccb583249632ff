"""Executors: where candidates are evaluated (in-process now; Ray workers next)."""

from autoprune.executors.base import Executor, Job, run_job
from autoprune.executors.local import LocalExecutor

__all__ = ["Executor", "Job", "LocalExecutor", "run_job"]
