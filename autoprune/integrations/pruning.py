"""A pruning task made ready for another library's loop (an Optuna study, a Ray Tune run).

:func:`prepare_pruning` takes the options of :func:`autoprune.search` and does what a
search does before its first trial (load data and model, train the dense model on first
use, analyse the groups, resolve the budget, build the evaluator), writing nothing. The
:class:`Pruning` it returns holds the space and budget (a searcher's
:class:`~autoprune.searchers.base.Problem`), repairs free draws onto the budget with the
searchers' own :func:`~autoprune.searchers.repair.repair` and ``fill``, and evaluates
candidates exactly as a search's trials are evaluated (the seed of a ``draw`` as the run
loop derives it).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoprune.config import SearchConfig
from autoprune.errors import UserError
from autoprune.evaluation.evaluator import Progress
from autoprune.loop import draw_seed
from autoprune.searchers.base import Problem
from autoprune.searchers.repair import fill, repair
from autoprune.space.search_space import SearchSpace
from autoprune.threads import torch_threads

logger = logging.getLogger(__name__)


@dataclass
class Pruning:
    """What :func:`prepare_pruning` made: the run's configuration and its prepared task."""

    config: SearchConfig
    prepared: Any  # autoprune.setup_run.Prepared

    @property
    def problem(self) -> Problem:
        return self.prepared.problem

    @property
    def space(self) -> SearchSpace:
        return self.prepared.space

    @property
    def evaluator(self) -> Any:
        return self.prepared.evaluator

    @property
    def dense_metrics(self) -> dict[str, float]:
        return dict(self.prepared.dense_metrics)

    def feasible(self, levels: np.ndarray) -> bool:
        return bool(self.problem.feasible(self.space.check(levels))[0])

    def onto_budget(self, levels: np.ndarray, rng: np.random.Generator, *, use_budget: bool = True) -> np.ndarray:
        """``levels`` pruned further until within budget, then (``use_budget``) given back
        channels while a step fits, as the ``random`` searcher does."""
        levels = self.space.check(levels).astype(np.int64)
        if not self.problem.feasible(levels)[0]:
            levels = repair(self.problem, levels, rng)
        return fill(self.problem, levels, rng) if use_budget else levels

    def evaluate(self, levels: np.ndarray, *, fidelity: int | None = None, draw: int = 0,
                 eval_samples: int | None = None, progress: Progress | None = None) -> dict[str, float]:
        """Held-out metrics of ``levels`` after ``fidelity`` retraining steps (default: the
        configuration's), trained with ``draw``'s seed, ``progress`` hearing held-out scores
        on the way where the evaluator reports them (image models); raises
        :class:`~autoprune.evaluation.evaluator.EvaluationFailed` when the candidate fails
        and ``ValueError`` when it is over budget."""
        levels = self.space.check(levels).astype(np.int64)
        if not self.problem.feasible(levels)[0]:
            raise ValueError(f"levels {levels.tolist()} are over budget; repair them first (Pruning.onto_budget)")
        steps = self.config.fidelity if fidelity is None else int(fidelity)
        kwargs: dict[str, Any] = {"fidelity": steps, "seed": draw_seed(self.config.seed, draw),
                                  "eval_samples": eval_samples}
        if progress is not None and "progress" in inspect.signature(self.evaluator.run).parameters:
            kwargs["progress"] = progress  # the language-model evaluator reports at the end only
        with torch_threads(self.config.threads):  # None: the calling process's own setting
            return dict(self.evaluator.run(levels, **kwargs).metrics)


def prepare_pruning(**options: Any) -> Pruning:
    """A task ready to prune, from the options of :func:`autoprune.search` (``data``,
    ``model``, ``budget``, ``fidelity``, ``seed``, ...); evaluations run in this process.
    The searcher options are not used here (the other library searches)."""
    from autoprune.setup_run import prepare

    config = SearchConfig.from_dict(options, source="prepare_pruning options")
    if config.executor != "local":
        raise UserError("prepare_pruning evaluates in the calling process; leave executor at 'local' (Ray Tune "
                        "places trials itself through autoprune.integrations.tune).")
    prepared = prepare(config)
    prepared.executor.close()  # the other library runs the evaluations; no executor of ours
    return Pruning(config=config, prepared=prepared)
