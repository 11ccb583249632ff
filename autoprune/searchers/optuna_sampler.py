"""``optuna``: Optuna's samplers (TPE, NSGA-II/III, GP, CMA-ES, random) as a searcher.

Optuna is driven through its ask-and-tell interface (``study.ask``, ``study.tell``):
Optuna samples, this module hands its draws to the run loop and their results back.

- Parameters: one integer parameter per group (its level, ``0 .. n_levels - 1``), named
  after the group, so the study reads like the space.
- Objectives (``objectives``): ``error`` (1 - held-out accuracy; a language model's KL
  to the dense model) alone (the default for ``tpe``, ``gp``,
  ``cmaes``, ``random``: a single-objective study), or two or more of
  :data:`~autoprune.searchers.objectives.OBJECTIVES` (the default for ``nsga2`` and
  ``nsga3``: ``error, flops``), all minimised; costs are relative to the dense model.
- Budget: no proposal is over budget. A draw over budget is pruned further until it
  fits with :func:`~autoprune.searchers.repair.repair` (and, with ``use_budget``, every
  draw gives back what is left with :func:`~autoprune.searchers.repair.fill`; on by
  default for one objective, where the optimum lies on the budget's edge). The draw is
  told the result of what was evaluated in its place, and where the sampler reads
  Optuna's constraints (TPE, NSGA-II, NSGA-III, GP) the draw carries its budget
  violation (``trial.set_constraint``), so an infeasible draw ranks behind every feasible
  one. When the evaluated candidate differs from the draw, the study also learns it as a
  trial of its own (``study.add_trial``), so it learns from what was really evaluated.
- Start (``start``): ``random`` (the default) leaves the first trials to the sampler's own
  start-up draws; ``uniform`` enqueues the least-pruning uniform allocation as the first
  trial (``study.enqueue_trial``), the start ``darwin`` and ``tyr`` search from, so the
  study holds the baseline and learns from it. It does not make the study keep it: under
  a tight budget a short proxy can rank the uniform allocation below lopsided ones that
  retrain worse (``experiments/README.md``, issue 21's result).
- Failed evaluations are told as Optuna's ``FAIL`` state, which samplers leave out.
- Determinism: every sampler is seeded from the searcher's seed and repairs draw from the
  searcher's generator; results are matched to the draws they answer and told in ask
  order, so the same seed and results give the same proposals, also mid-study, and a
  killed run resumes by replaying autoprune's journal. The study itself is kept in the
  run directory (:meth:`OptunaSearcher.keep_files_in`: ``optuna.journal``, Optuna's
  ``JournalStorage``) for ``optuna-dashboard``; it is written again on every resume,
  never read back.

Optuna is an optional dependency, imported when the searcher is built. ``gp`` needs
torch and scipy (Optuna imports them itself); ``cmaes`` needs the ``cmaes`` package.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from autoprune.errors import UserError
from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.objectives import (
    budget_violation,
    check_objectives,
    cost_objectives,
    error_of,
    names_latency,
)
from autoprune.searchers.repair import fill, repair
from autoprune.searchers.staged import check_int

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "cmaes", "random")
#: where a study starts: the sampler's own draws, or the least-pruning uniform allocation first
STARTS = ("random", "uniform")
#: samplers that read Optuna's constraints (the others warn when constraints are set)
CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "nsga3", "gp")
#: samplers of one objective only
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
#: the study's file in a run directory (Optuna's JournalStorage, readable by optuna-dashboard)
STUDY_FILE = "optuna.journal"
STUDY_NAME = "autoprune"
INSTALL_HINT = "pip install 'autoprune[optuna]'"


def import_optuna() -> Any:
    """The ``optuna`` module, or one sentence saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"autoprune's Optuna support needs Optuna, which is not installed; install it with "
                        f"{INSTALL_HINT}.") from None
    return optuna


def check_objective_names(objectives: object, problem: Problem) -> tuple[str, ...]:
    """``error`` alone, or two or more objectives as :func:`check_objectives` accepts them."""
    names = objectives.split(",") if isinstance(objectives, str) else objectives
    if isinstance(names, Sequence) and [str(o).strip().lower() for o in names] == ["error"]:
        return ("error",)
    return check_objectives(objectives, problem)


@dataclass
class _Draw:
    """One asked Optuna trial: what the sampler drew and what is evaluated in its place."""

    trial: Any  # optuna.Trial
    drawn: np.ndarray
    levels: np.ndarray


def make_sampler(name: str, *, seed: int, n_startup_trials: int, population_size: int) -> Any:
    """The Optuna sampler called ``name``, seeded."""
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per told trial would drown the run's output
    samplers = optuna.samplers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        if name == "nsga2":
            return samplers.NSGAIISampler(seed=seed, population_size=population_size)
        if name == "nsga3":
            return samplers.NSGAIIISampler(seed=seed, population_size=population_size)
        if name == "gp":
            return samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401  (Optuna's CmaEsSampler imports it on first use)
            except ImportError:
                raise UserError("sampler cmaes needs the cmaes package, which is not installed; install it with "
                                "pip install cmaes.") from None
            return samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials)
        return samplers.RandomSampler(seed=seed)


class OptunaSearcher(Searcher):
    name = "optuna"
    batch_size: ClassVar[int] = 8

    @classmethod
    def needs_latency_model(cls, options: dict[str, Any]) -> bool:
        return names_latency(options.get("objectives", ()))

    def __init__(
        self,
        *,
        problem: Problem,
        seed: int = 0,
        sampler: str = "tpe",
        objectives: Sequence[str] | str | None = None,
        use_budget: bool | None = None,
        n_startup_trials: int = 10,
        population_size: int = 20,
        start: str = "random",
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        if not isinstance(sampler, str) or sampler.strip().lower() not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        self.sampler_name = sampler.strip().lower()
        if objectives is None:
            objectives = ("error", "flops") if self.sampler_name in ("nsga2", "nsga3") else ("error",)
        self.objectives = check_objective_names(objectives, problem)
        if len(self.objectives) > 1 and self.sampler_name in SINGLE_OBJECTIVE_SAMPLERS:
            raise ValueError(f"sampler {self.sampler_name} optimises one objective, got objectives "
                             f"{list(self.objectives)}; use objectives=error or another sampler")
        if use_budget is not None and not isinstance(use_budget, bool):
            raise ValueError(f"use_budget must be true or false, got {use_budget!r}")
        self.use_budget = len(self.objectives) == 1 if use_budget is None else use_budget
        self.n_startup_trials = check_int("n_startup_trials", n_startup_trials, 0)
        self.population_size = check_int("population_size", population_size, 2)
        if not isinstance(start, str) or start.strip().lower() not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
        self.start = start.strip().lower()
        self._error_column = self.objectives.index("error")
        self._constrained = self.sampler_name in CONSTRAINED_SAMPLERS
        self._sampler = make_sampler(self.sampler_name, seed=self.seed, n_startup_trials=self.n_startup_trials,
                                     population_size=self.population_size)
        self._study_path: Path | None = None
        self._study: optuna.Study | None = None
        self._outstanding: list[_Draw] = []
        #: evaluated candidates the study has learned as trials of their own (draws that differ)
        self._added: set[tuple[int, ...]] = set()

    # -- the study ---------------------------------------------------------------------------

    def keep_files_in(self, run_dir: Path) -> None:
        """Keep the study in ``run_dir/optuna.journal`` (written afresh: a resumed run
        replays its journal into a new study, so the file holds exactly the run's trials)."""
        if self._study is not None:
            raise RuntimeError("the study's file must be chosen before the first ask")
        path = Path(run_dir) / STUDY_FILE
        for stale in (path, path.with_name(path.name + ".lock")):
            stale.unlink(missing_ok=True)
        self._study_path = path

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (made on first use, in the run directory when one was given)."""
        if self._study is None:
            optuna = import_optuna()
            storage: Any = None
            if self._study_path is not None:
                from optuna.storages import JournalStorage
                from optuna.storages.journal import JournalFileBackend

                storage = JournalStorage(JournalFileBackend(str(self._study_path)))
            study = optuna.create_study(storage=storage, sampler=self._sampler, study_name=STUDY_NAME,
                                        directions=["minimize"] * len(self.objectives))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(self.objectives))  # the dashboard's axis names
            uniform = self.problem.least_pruning_uniform() if self.start == "uniform" else None
            if uniform is not None:
                study.enqueue_trial(dict(zip(self.space.group_names, (int(v) for v in uniform), strict=True)))
            self._study = study
        return self._study

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import IntDistribution

        return {name: IntDistribution(0, self.space.n_levels - 1) for name in self.space.group_names}

    # -- ask and tell ------------------------------------------------------------------------

    def _ask(self, n: int) -> list[Proposal]:
        proposals = []
        for _ in range(n):
            trial = self.study.ask(self._distributions())
            drawn = np.array([trial.params[name] for name in self.space.group_names], dtype=np.int64)
            levels = drawn if self.problem.feasible(drawn)[0] else repair(self.problem, drawn, self.rng)
            if self.use_budget:
                levels = fill(self.problem, levels, self.rng)
            self._outstanding.append(_Draw(trial=trial, drawn=drawn, levels=levels))
            proposals.append(Proposal(levels=levels.copy()))
        return proposals

    def _tell(self, results: list[Result]) -> None:
        for result in results:
            for position, draw in enumerate(self._outstanding):
                if np.array_equal(result.levels, draw.levels):
                    del self._outstanding[position]
                    self._tell_draw(draw, result)
                    break
            else:
                logger.warning("optuna: ignoring result of trial %s: it answers no outstanding draw", result.trial_id)

    def _values(self, result: Result) -> list[float] | None:
        error = error_of(result)
        if error is None:
            return None
        values = cost_objectives(self.problem, self.objectives, result.levels)[0]
        values[self._error_column] = error
        return [float(v) for v in values]

    def _violations(self, levels: np.ndarray) -> dict[str, float]:
        names = list(self.problem.constraints.limits)
        return {name: float(v) for name, v in zip(names, budget_violation(self.problem, levels)[0], strict=True)}

    def _tell_draw(self, draw: _Draw, result: Result) -> None:
        from optuna.trial import TrialState, create_trial

        values = self._values(result)
        draw.trial.set_user_attr("autoprune_trial", int(result.trial_id))
        draw.trial.set_user_attr("evaluated_levels", [int(v) for v in draw.levels])
        if values is None:
            self.study.tell(draw.trial, state=TrialState.FAIL)
            return
        if self._constrained:
            for name, violation in self._violations(draw.drawn).items():
                draw.trial.set_constraint(name, violation)
        self.study.tell(draw.trial, values)
        key = tuple(int(v) for v in draw.levels)
        if np.array_equal(draw.drawn, draw.levels) or key in self._added:
            return
        self._added.add(key)
        params = dict(zip(self.space.group_names, key, strict=True))
        constraints = self._violations(draw.levels) if self._constrained else None
        self.study.add_trial(create_trial(params=params, distributions=self._distributions(), values=values,
                                          user_attrs={"autoprune_trial": int(result.trial_id), "repaired": True},
                                          constraints=constraints))

    # -- declarations ------------------------------------------------------------------------

    def plan(self, trials: int) -> str | None:
        if self.sampler_name in ("nsga2", "nsga3"):
            generations = trials // self.population_size
            return (f"optuna ({self.sampler_name} over {', '.join(self.objectives)}): {trials} trials buy about "
                    f"{generations} generations of {self.population_size}")
        if self.sampler_name in ("tpe", "gp", "cmaes") and trials <= self.n_startup_trials:
            return (f"optuna ({self.sampler_name}): {trials} trials are all random start-up draws "
                    f"(n_startup_trials {self.n_startup_trials}); ask for more trials to use the sampler")
        return None

    def options(self) -> dict[str, Any]:
        return {**super().options(), "sampler": self.sampler_name, "objectives": list(self.objectives),
                "use_budget": self.use_budget, "n_startup_trials": self.n_startup_trials,
                "population_size": self.population_size, "start": self.start}
