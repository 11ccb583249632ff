"""The pieces of ``emo-pms``: one sub-network's NSGA-II, and the choice of one front member
per sub-network under a budget (no torch).

- :class:`SubNetworkSearch`: pymoo's NSGA-II over the levels of the groups one
  sub-network owns, driven by ask and tell as ``emo`` drives it
  (:class:`~autoprune.searchers.population.AskTellPopulation`; pymoo's own seeded
  generator; emo's integer crossover and mutation). A member is the whole network with
  every other group dense; its objectives are the feature distortion at the
  sub-network's boundary and its cost relative to dense.
- :func:`best_combinations`: GPIR's last step, a small multiple-choice knapsack: one
  member per sub-network (each with its measured impairment), least summed impairment
  within each of several budgets. Combinations are enumerated when there are few enough,
  else merged sub-network by sub-network keeping only those no other beats in both
  impairment and cost (exact when costs add up across sub-networks; the FLOPs of a layer
  that reads one sub-network's channels and writes another's do not, so there the merge
  is a close approximation); whatever is chosen is held to the exact cost model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from autoprune.searchers.base import Problem
from autoprune.searchers.emo_parts import JITTER, make_crossover, make_mutation
from autoprune.searchers.objectives import cost_objectives
from autoprune.searchers.population import Answer, AskTellPopulation

logger = logging.getLogger(__name__)

#: the distortion a failed member counts with (besides being infeasible)
FAILED_DISTORTION = 1e6
#: combinations enumerated outright; above it they are merged keeping the non-dominated
MAX_ENUMERATED = 200_000
#: partial combinations the merge keeps at most (the least impaired of the non-dominated)
MAX_PARTIALS = 5_000


class _SubProblem(PymooProblem):
    """The levels of one sub-network's groups; evaluated outside pymoo."""

    def __init__(self, n_var: int, n_levels: int) -> None:
        super().__init__(n_var=n_var, n_obj=2, n_ieq_constr=1, xl=0, xu=n_levels - 1, vtype=int)

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("emo-pms's members are evaluated by the run loop, not by pymoo")


class _UniformThenJittered(Sampling):
    """The first population spans the cost axis: uniform levels from dense to sparsest,
    evenly spaced, then the same jittered per group (as emo's first population)."""

    def _do(self, problem: _SubProblem, n_samples: int, *args: Any,
            random_state: np.random.Generator | None = None, **kwargs: Any) -> np.ndarray:
        assert random_state is not None
        top = int(problem.xu[0])
        spread = sorted({int(round(v)) for v in np.linspace(0, top, min(n_samples, top + 1))})
        X = np.empty((n_samples, problem.n_var), dtype=np.int64)
        for i in range(n_samples):
            base = np.full(problem.n_var, spread[i % len(spread)], dtype=np.int64)
            if i >= len(spread):
                base = base + random_state.integers(-JITTER, JITTER + 1, size=problem.n_var)
            X[i] = np.clip(base, 0, top)
        return X


@dataclass(frozen=True)
class Member:
    """A sub-network's candidate: the levels of its groups, and the measurement's results."""

    levels: np.ndarray  # the sub-network's groups only
    distortion: float
    cost: float
    loss: float | None


class SubNetworkSearch:
    """NSGA-II over one sub-network's groups (see the module docstring)."""

    def __init__(self, *, problem: Problem, groups: Sequence[int], cost: str, pop_size: int,
                 generations: int, crossover: str, crossover_eta: float, mutation: str, mutation_eta: float,
                 seed: int) -> None:
        self.problem = problem
        self.groups = np.asarray(groups, dtype=np.int64)
        self.cost = cost
        self.generations = generations
        space = problem.space
        kept = np.array([g.kept for g in space.groups], dtype=np.int64)[self.groups]

        def kept_counts(pop: Any) -> np.ndarray:
            X = np.clip(np.around(np.asarray(pop.get("X"), dtype=float)), 0, space.n_levels - 1).astype(np.int64)
            return kept[np.arange(len(self.groups)), X].astype(float)

        self.pymoo_problem = _SubProblem(len(self.groups), space.n_levels)
        self.algorithm = NSGA2(pop_size=pop_size, sampling=_UniformThenJittered(),
                               crossover=make_crossover(crossover, crossover_eta),
                               mutation=make_mutation(mutation, mutation_eta),
                               eliminate_duplicates=DefaultDuplicateElimination(func=kept_counts))
        self.algorithm.setup(self.pymoo_problem, seed=seed, termination=NoTermination(), verbose=False)
        self.population = AskTellPopulation(self.algorithm, self.pymoo_problem)
        self._kept = kept
        self.members: dict[tuple[int, ...], Member] = {}  # every member answered, by kept counts
        self.done = False

    @property
    def n_generations(self) -> int:
        return self.population.n_generations

    def key(self, sub_levels: np.ndarray) -> tuple[int, ...]:
        return tuple(int(k) for k in self._kept[np.arange(len(self.groups)), sub_levels])

    def embed(self, sub_levels: np.ndarray) -> np.ndarray:
        """The whole network's levels: this sub-network's as given, every other group dense."""
        levels = self.problem.space.dense_candidate()
        levels[self.groups] = sub_levels
        return levels

    def next_population(self, known: Callable[[np.ndarray], Member | None]) -> None:
        """Ask pymoo for the next population (``done`` once the generations are spent).
        Members answered before, here or by ``known`` (a measurement of the same whole
        network made elsewhere, such as the dense one), are answered at once; a population
        answered whole goes straight back."""
        if self.n_generations >= self.generations:
            self.done = True
            return

        def answered(row: np.ndarray) -> Answer | None:
            member = self.members.get(self.key(row)) or known(row)
            if member is None:
                return None
            self.members[self.key(row)] = member
            return _objectives(member)

        if not self.population.ask(answered):
            self.done = True
            return
        if self.population.complete:
            self.population.give_back()

    @property
    def needs_population(self) -> bool:
        return not self.done and not self.population.out

    def hand_out(self) -> list[int]:
        """Every member of the population out that is still to be measured."""
        return self.population.hand_out()

    def levels_of(self, member: int) -> np.ndarray:
        return self.population.levels[member].copy()

    def answer(self, member: int, result: Member) -> None:
        """File the result of a handed-out member; the population goes back when complete."""
        self.population.answer(member, _objectives(result))
        self.members[self.key(self.population.levels[member])] = result
        if self.population.complete:
            self.population.give_back()

    def member(self, sub_levels: np.ndarray, *, distortion: float | None, loss: float | None) -> Member:
        """A member's record from its measurement (a failure: no distortion)."""
        cost = float(cost_objectives(self.problem, [self.cost], self.embed(sub_levels))[0, 0])
        value = FAILED_DISTORTION if distortion is None or not math.isfinite(distortion) else float(distortion)
        return Member(levels=np.asarray(sub_levels, dtype=np.int64).copy(), distortion=value, cost=cost, loss=loss)

    def front(self) -> list[Member]:
        """The non-dominated members in distortion and cost (pymoo's sorting), dense first
        included, in order of cost, most expensive first."""
        scored = [m for m in self.members.values() if m.distortion < FAILED_DISTORTION]
        if not scored:
            return []
        F = np.array([[m.distortion, m.cost] for m in scored])
        first = NonDominatedSorting().do(F, only_non_dominated_front=True)
        chosen = [scored[i] for i in first]
        return sorted(chosen, key=lambda m: (-m.cost, m.distortion, m.levels.tolist()))


def _objectives(member: Member) -> Answer:
    """What pymoo is told of a member: distortion and cost; infeasible when it failed."""
    failed = not (math.isfinite(member.distortion) and member.distortion < FAILED_DISTORTION)
    return (np.array([min(member.distortion, FAILED_DISTORTION), member.cost]), np.array([1.0 if failed else 0.0]))


def best_combinations(problem: Problem, groups: Sequence[np.ndarray], fronts: Sequence[Sequence[np.ndarray]],
                      impairments: Sequence[Sequence[float]], fractions: Sequence[float]) -> list[np.ndarray | None]:
    """Per budget fraction, the whole network of one front member per sub-network (its
    ``groups`` at the member's levels) with the least summed impairment whose every bounded
    resource is within ``fraction`` of its limit; None where no combination fits."""
    space = problem.space
    limits = problem.constraints.limits
    sizes = [len(f) for f in fronts]
    if any(size == 0 for size in sizes):
        return [None] * len(fractions)
    if math.prod(sizes) <= MAX_ENUMERATED:
        levels, impairment = _enumerate(space.dense_candidate(), groups, fronts, impairments)
    else:
        levels, impairment = _merge(problem, groups, fronts, impairments)
    usage = problem.constraints.usage(space, levels)
    chosen: list[np.ndarray | None] = []
    for fraction in fractions:
        fits = np.ones(len(levels), dtype=bool)
        for resource, limit in limits.items():
            fits &= usage[resource] <= limit * fraction
        if not fits.any():
            chosen.append(None)
            continue
        total = sum(usage[r] / limits[r] for r in limits) if limits else np.zeros(len(levels))
        order = np.lexsort((total, np.where(fits, impairment, np.inf)))
        chosen.append(levels[order[0]].copy())
    return chosen


def _enumerate(dense: np.ndarray, groups: Sequence[np.ndarray], fronts: Sequence[Sequence[np.ndarray]],
               impairments: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Every combination's levels and summed impairment."""
    levels = dense[None, :].copy()
    impairment = np.zeros(1)
    for g, front, imp in zip(groups, fronts, impairments):
        levels, impairment = _extend(levels, impairment, g, front, imp)
    return levels, impairment


def _extend(levels: np.ndarray, impairment: np.ndarray, groups: np.ndarray, front: Sequence[np.ndarray],
            imp: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    n, m = len(levels), len(front)
    out = np.repeat(levels, m, axis=0)
    out[:, groups] = np.tile(np.stack(front), (n, 1))
    return out, np.repeat(impairment, m) + np.tile(np.asarray(imp, dtype=float), n)


def _merge(problem: Problem, groups: Sequence[np.ndarray], fronts: Sequence[Sequence[np.ndarray]],
           impairments: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sub-network by sub-network, keeping the combinations no other beats in impairment
    and in every bounded resource (see the module docstring)."""
    space = problem.space
    levels = space.dense_candidate()[None, :].copy()
    impairment = np.zeros(1)
    resources = list(problem.constraints.limits) or ["flops"]
    for g, front, imp in zip(groups, fronts, impairments):
        levels, impairment = _extend(levels, impairment, g, front, imp)
        usage = problem.constraints.usage(space, levels) if problem.constraints.limits else {
            "flops": space.cost("flops", levels)}
        F = np.column_stack([impairment] + [usage[r] for r in resources])
        keep = NonDominatedSorting().do(F, only_non_dominated_front=True)
        keep = keep[np.argsort(impairment[keep], kind="stable")][:MAX_PARTIALS]
        levels, impairment = levels[keep], impairment[keep]
    return levels, impairment
