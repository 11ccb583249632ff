"""The pymoo pieces of ``emo``: the integer problem, budget repair, spread sampling, operators.

pymoo's NSGA-II/III do the sorting, crowding and reference-direction niching; this
module only tells them what a candidate is and how to keep it within budget:

- :class:`LevelProblem`: one integer variable per group (its level), the objectives, and
  one inequality constraint per bounded resource plus one for a failed evaluation (a
  failed trial is infeasible, so constraint domination ranks it behind every scored one).
  It is never evaluated by pymoo: the run loop evaluates, and the searcher hands pymoo
  the values through :class:`~pymoo.problems.static.StaticProblem`.
- :class:`BudgetRepair`: rounds and clips to the grid, then prunes until the candidate
  fits with :func:`~autoprune.searchers.repair.repair` (optionally giving back what is
  left with :func:`~autoprune.searchers.repair.fill`), so no candidate pymoo produces,
  initial or offspring, is ever over budget. pymoo applies it before its duplicate check.
- :class:`SpreadSampling`: the first population spans the front's cost axis: every
  uniform level that fits (the least pruning first), then the same levels jittered per
  group, repaired. Uniform random levels repaired onto a tight budget would all sit at
  its edge, far from the sparse end of the front.
- :func:`kept_count_duplicates`: two level vectors that keep the same channel counts are
  the same model (rounding plateaus), so duplicates are judged on kept counts.
- :func:`nsga3_selection`: NSGA-III's tournament with pymoo's random state passed on.
- :func:`make_crossover` / :func:`make_mutation`: pymoo's operators for integers as its
  documentation shows them (SBX and polynomial mutation on floats, rounded), or the
  integer-native uniform and two-point crossovers.

Randomness is pymoo's own ``algorithm.random_state`` (a generator seeded once at setup),
which pymoo hands to every operator and repair, so nothing here touches global state.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pymoo.config import Config
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.pntx import TwoPointCrossover
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.selection.tournament import TournamentSelection, compare

from autoprune.searchers.base import Problem
from autoprune.searchers.repair import fill, repair

logger = logging.getLogger(__name__)

# pymoo prints a notice about its optional compiled extensions to stdout when an algorithm
# is built; our objectives are cheap to sort, and stdout belongs to the CLI's output
Config.warnings["not_compiled"] = False

CROSSOVERS = ("sbx", "ux", "pntx")
MUTATIONS = ("pm",)
#: how far (in levels) the jittered members of the first population stray from a uniform level
JITTER = 2


class LevelProblem(PymooProblem):
    """Levels as pymoo's integer decision variables; evaluated outside pymoo."""

    def __init__(self, problem: Problem, n_obj: int) -> None:
        self.budget = problem
        super().__init__(n_var=problem.space.n_groups, n_obj=n_obj,
                         n_ieq_constr=len(problem.constraints.limits) + 1,
                         xl=0, xu=problem.space.n_levels - 1, vtype=int)

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("emo's candidates are evaluated by the run loop, not by pymoo")


def _as_levels(problem: LevelProblem, X: np.ndarray) -> np.ndarray:
    return np.clip(np.around(np.asarray(X, dtype=float)), 0, problem.budget.space.n_levels - 1).astype(np.int64)


class BudgetRepair(Repair):
    """Onto the grid, then within every limit (and, with ``use_budget``, filled up to it)."""

    def __init__(self, *, use_budget: bool) -> None:
        super().__init__()
        self.use_budget = use_budget

    def _do(self, problem: LevelProblem, X: np.ndarray, random_state: np.random.Generator | None = None,
            **kwargs: Any) -> np.ndarray:
        assert random_state is not None, "pymoo hands every repair the algorithm's random state"
        levels = _as_levels(problem, X)
        out = np.empty_like(levels)
        for i, row in enumerate(levels):
            fixed = repair(problem.budget, row, random_state)
            out[i] = fill(problem.budget, fixed, random_state) if self.use_budget else fixed
        return out


class SpreadSampling(Sampling):
    """Every uniform level that fits, then jittered copies of them (see the module docstring)."""

    def _do(self, problem: LevelProblem, n_samples: int, *args: Any,
            random_state: np.random.Generator | None = None, **kwargs: Any) -> np.ndarray:
        assert random_state is not None
        budget = problem.budget
        space = budget.space
        uniform = [space.uniform_candidate(level) for level in range(space.n_levels)]
        fitting = [u for u in uniform if budget.feasible(u)[0]] or [space.sparsest_candidate()]
        X = np.empty((n_samples, space.n_groups), dtype=np.int64)
        for i in range(n_samples):
            base = fitting[i % len(fitting)]
            if i >= len(fitting):
                base = base + random_state.integers(-JITTER, JITTER + 1, size=space.n_groups)
            X[i] = np.clip(base, 0, space.n_levels - 1)
        return X  # BudgetRepair, applied by pymoo's initialisation, brings each within budget


def kept_count_duplicates(problem: Problem) -> DefaultDuplicateElimination:
    """Duplicates judged on kept channel counts, not level names."""
    space = problem.space

    def kept(pop: Any) -> np.ndarray:
        levels = np.clip(np.around(np.asarray(pop.get("X"), dtype=float)), 0, space.n_levels - 1).astype(np.int64)
        return space.kept_counts(levels).astype(float)

    return DefaultDuplicateElimination(func=kept)


def _cv_then_random(pop: Any, P: np.ndarray, random_state: np.random.Generator | None = None,
                    **kwargs: Any) -> np.ndarray:
    """NSGA-III's binary tournament (pymoo's ``comp_by_cv_then_random``): the less
    infeasible wins, else a random one. pymoo 0.6.2's own does not hand its random state to
    the tie between two equally infeasible members (two failed trials), which then draws
    from fresh OS entropy and would make a run irreproducible; this one does."""
    assert random_state is not None
    S = np.empty(len(P), dtype=int)
    for i, (a, b) in enumerate(P):
        if pop[a].CV > 0.0 or pop[b].CV > 0.0:
            S[i] = compare(a, pop[a].CV, b, pop[b].CV, method="smaller_is_better", return_random_if_equal=True,
                           random_state=random_state)
        else:
            S[i] = random_state.choice([a, b])
    return S[:, None]


def nsga3_selection() -> TournamentSelection:
    """NSGA-III's tournament selection, reproducible (see :func:`_cv_then_random`)."""
    return TournamentSelection(func_comp=_cv_then_random)


def make_crossover(name: str, eta: float) -> Crossover:
    """pymoo's crossover ``name`` for integer levels."""
    if name == "sbx":
        return SBX(prob=1.0, eta=eta, vtype=float, repair=RoundingRepair())
    if name == "ux":
        return UniformCrossover()
    if name == "pntx":
        return TwoPointCrossover()
    raise ValueError(f"crossover must be one of {list(CROSSOVERS)}, got {name!r}")


def make_mutation(name: str, eta: float) -> Mutation:
    """pymoo's mutation ``name`` for integer levels."""
    if name == "pm":
        return PM(prob=1.0, eta=eta, vtype=float, repair=RoundingRepair())
    raise ValueError(f"mutation must be one of {list(MUTATIONS)}, got {name!r}")
