"""Prune a model inside an Optuna user's own study.

::

    import optuna
    from autoprune.integrations.optuna import PruningObjective, levels_of, uniform_params
    from autoprune.integrations.pruning import prepare_pruning

    pruning = prepare_pruning(data="fashion-mnist", model="resnet20", budget=["flops=0.2"], fidelity=200)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.MedianPruner())
    study.enqueue_trial(uniform_params(pruning))  # optional: start at uniform pruning
    study.optimize(PruningObjective(pruning=pruning, report_every=50), n_trials=50)
    levels = levels_of(study.best_trial)

:class:`PruningObjective` is an ordinary Optuna objective: it suggests one integer level
per group from autoprune's space (:func:`suggest_levels`, parameters ``level:<group>``),
repairs a draw over the budget onto it (and with ``use_budget`` fills what is left, as
the ``random`` searcher does), evaluates what it repaired with autoprune's evaluator
(short retraining, held-out metrics) and returns the objectives (``error`` = 1 - held-out
accuracy by default, a language model's KL to the dense model; ``flops``, ``params``, ``latency`` relative to the dense model for a
multi-objective study). Where the study's sampler reads Optuna's constraints (TPE,
NSGA-II, NSGA-III, GP) the draw's budget violation is set with ``trial.set_constraint``,
so draws over budget rank behind feasible ones. With ``report_every`` a single-objective
study hears the held-out error every that many steps (``trial.report``) and its pruner
may stop the trial (``TrialPruned``). The evaluated levels and every metric are kept in
the trial's user attributes; a candidate that fails (diverged, out of memory) returns NaN,
which Optuna records as a failed trial.

:func:`uniform_params` gives the least-pruning uniform allocation as the study's
parameters, to enqueue as its first trial (the start ``darwin`` searches from), so the
study holds the baseline to compare its draws with.

The ``--searcher optuna`` of ``autoprune search`` is the other way round: autoprune's
run (journal, resume, front, export) driving Optuna's samplers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoprune.evaluation.evaluator import EvaluationFailed, Progress
from autoprune.integrations.pruning import Pruning
from autoprune.searchers.base import Result
from autoprune.searchers.objectives import budget_violation, cost_objectives, error_of
from autoprune.searchers.optuna_sampler import check_objective_names, import_optuna
from autoprune.searchers.staged import check_int
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

#: prefix of the parameter names, so a user's own parameters in the same study do not clash
PARAM_PREFIX = "level:"


def suggest_levels(trial: Any, space: SearchSpace) -> np.ndarray:
    """One level per group of ``space``, suggested by ``trial`` as ``level:<group>`` integers."""
    return np.array([trial.suggest_int(f"{PARAM_PREFIX}{name}", 0, space.n_levels - 1) for name in space.group_names],
                    dtype=np.int64)


def uniform_params(pruning: Pruning) -> dict[str, int]:
    """The least-pruning uniform allocation within ``pruning``'s budget as ``level:<group>``
    parameters, for ``study.enqueue_trial``."""
    if not isinstance(pruning, Pruning):
        raise ValueError(f"pruning must be what prepare_pruning returns, got {type(pruning).__name__}")
    uniform = pruning.problem.least_pruning_uniform()
    if uniform is None:
        raise ValueError("no uniform allocation meets the budget; start the study without one")
    return {f"{PARAM_PREFIX}{name}": int(level) for name, level in zip(pruning.space.group_names, uniform, strict=True)}


def levels_of(trial: Any) -> np.ndarray:
    """The levels evaluated for a trial of :class:`PruningObjective` (its repaired draw)."""
    if "levels" not in trial.user_attrs:
        raise ValueError(f"trial {trial.number} was not evaluated by a PruningObjective")
    return np.array(trial.user_attrs["levels"], dtype=np.int64)


def reads_constraints(sampler: Any) -> bool:
    """Whether ``sampler`` uses Optuna's constraints (the others warn when they are set)."""
    optuna = import_optuna()
    samplers = optuna.samplers
    return isinstance(sampler, (samplers.TPESampler, samplers.NSGAIISampler, samplers.NSGAIIISampler,
                                samplers.GPSampler))


class PruningObjective:
    """An Optuna objective that prunes ``pruning``'s model within its budget."""

    def __init__(
        self,
        *,
        pruning: Pruning,
        objectives: Sequence[str] | str = ("error",),
        fidelity: int | None = None,
        use_budget: bool | None = None,
        report_every: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(pruning, Pruning):
            raise ValueError(f"pruning must be what prepare_pruning returns, got {type(pruning).__name__}")
        self.pruning = pruning
        self.objectives = check_objective_names(objectives, pruning.problem)
        self.fidelity = None if fidelity is None else check_int("fidelity", fidelity, 0)
        if use_budget is not None and not isinstance(use_budget, bool):
            raise ValueError(f"use_budget must be True or False, got {use_budget!r}")
        self.use_budget = len(self.objectives) == 1 if use_budget is None else use_budget
        self.report_every = None if report_every is None else check_int("report_every", report_every, 1)
        if self.report_every is not None and len(self.objectives) > 1:
            raise ValueError("report_every needs a single-objective study: Optuna's pruners do not prune "
                             "multi-objective trials")
        self.seed = check_int("seed", seed, 0)
        import_optuna()

    def __call__(self, trial: Any) -> float | tuple[float, ...]:
        pruning = self.pruning
        drawn = suggest_levels(trial, pruning.space)
        # a generator per trial number: the same study, seeded, repairs alike in any order
        rng = np.random.default_rng([self.seed, int(trial.number)])
        levels = pruning.onto_budget(drawn, rng, use_budget=self.use_budget)
        if reads_constraints(trial.study.sampler):
            limits = list(pruning.problem.constraints.limits)
            for name, violation in zip(limits, budget_violation(pruning.problem, drawn)[0], strict=True):
                trial.set_constraint(name, float(violation))
        trial.set_user_attr("levels", [int(v) for v in levels])
        trial.set_user_attr("repaired", not np.array_equal(levels, drawn))
        try:
            metrics = pruning.evaluate(levels, fidelity=self.fidelity, progress=self._progress(trial))
        except EvaluationFailed as exc:
            logger.warning("trial %d failed: %s", trial.number, exc)
            trial.set_user_attr("error", str(exc))
            return math.nan if len(self.objectives) == 1 else tuple(math.nan for _ in self.objectives)
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        values = cost_objectives(pruning.problem, self.objectives, levels)[0]
        error = error_of(Result(trial_id=int(trial.number), levels=levels, fidelity=0, status="ok", metrics=metrics))
        values[self.objectives.index("error")] = math.nan if error is None else error
        return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)

    def _progress(self, trial: Any) -> Progress | None:
        if self.report_every is None:
            return None
        optuna = import_optuna()

        def report(steps: int, scores: dict[str, float]) -> None:
            trial.report(1.0 - scores["accuracy"], steps)
            if trial.should_prune():
                raise optuna.TrialPruned(f"held-out error {1.0 - scores['accuracy']:.4f} after {steps} steps")

        return Progress(every=self.report_every, report=report)
