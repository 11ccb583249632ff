"""Level swaps: the mutation of DarwinLM and Týr-the-Pruner, on any exact cost model.

Both papers mutate an allocation by *swapping* sparsity between layers: one layer is
pruned one level more and another one level less, so the total stays on the target.
Their level databases make every level step remove the same number of weights within a
layer type, so a swap inside a type is exactly cost-neutral (DarwinLM draws the type, in
proportion to its number of layers, and the two layers uniformly within it; Týr pairs
layers of the same type). Our groups differ in size and price and the cost is quadratic,
so a swap here is drawn by the cost model instead:

- the group to prune more, ``a``, with probability proportional to what its step saves;
- the group to give back, ``b``, among those whose step still fits the budget after
  ``a``'s saving, with probability proportional to what its step costs, which favours the
  pairs closest to cost-neutral.

Large groups, where most of the FLOPs are, therefore move most often, as in the papers
where a "level" of a big layer is many weights. A child is never over budget; leftover
budget is given back with :func:`fill_steps`. Which level a "step" leads to is the
searcher's business (:class:`GridSteps`: the next distinct kept count; Týr: a window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoprune.searchers.base import Problem
from autoprune.space.search_space import SearchSpace

#: levels -> (target of each group's step up, target of its step down); -1: no such step
Steps = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: DarwinLM draws the number of swaps per child as min(U{1..3}, U{1..3}) (its released
#: search script, ``num_flips``), biased towards small mutations
DARWIN_MAX_SWAPS = 3
#: Týr-the-Pruner's released search script draws min(U{1..4}, U{1..4})
TYR_MAX_SWAPS = 4


def number_of_swaps(rng: np.random.Generator, max_swaps: int) -> int:
    """min(U{1..max}, U{1..max}): one swap most often, ``max_swaps`` rarely."""
    return int(min(rng.integers(1, max_swaps + 1), rng.integers(1, max_swaps + 1)))


class GridSteps:
    """Steps to the neighbouring *distinct* kept count of each group.

    Rounding (``round_to``, ``min_channels``) makes neighbouring levels keep the same
    number of channels: the same model under two names. A step skips such plateaus and
    lands on the first (least pruned) level of the next count, so no swap is wasted on a
    candidate that differs from its parent only in name.
    """

    def __init__(self, space: SearchSpace) -> None:
        kept = np.array([g.kept for g in space.groups], dtype=np.int64)  # (G, L), non-increasing
        n_groups, n_levels = kept.shape
        first = np.zeros_like(kept)  # first level with the same count
        for level in range(1, n_levels):
            same = kept[:, level] == kept[:, level - 1]
            first[:, level] = np.where(same, first[:, level - 1], level)
        up = np.full_like(kept, -1)
        for level in range(n_levels - 2, -1, -1):  # first level after the current plateau
            nxt = np.where(kept[:, level + 1] < kept[:, level], level + 1, up[:, level + 1])
            up[:, level] = nxt
        down = np.full_like(kept, -1)
        for level in range(1, n_levels):
            previous = first[:, level] - 1  # last level of the denser plateau
            down[:, level] = np.where(previous >= 0, first[np.arange(n_groups), np.maximum(previous, 0)], -1)
        self._up, self._down = up, down
        self._rows = np.arange(n_groups)

    def __call__(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._up[self._rows, levels], self._down[self._rows, levels]


def _usage(problem: Problem, levels: np.ndarray) -> dict[str, np.ndarray]:
    """Every bounded resource of each row of ``levels`` (dense FLOPs stand in when none is)."""
    constraints, space = problem.constraints, problem.space
    usage = getattr(constraints, "usage", None)  # latency budgets predict through a latency model
    if usage is not None:
        used = usage(space, levels)
    else:
        used = {r: space.cost(r, np.atleast_2d(levels)) for r in ("flops", "params") if r in constraints.limits}
    return used or {"flops": space.cost("flops", np.atleast_2d(levels))}


def _scale(problem: Problem, resource: str) -> float:
    limits = problem.constraints.limits
    return float(limits[resource]) if resource in limits else float(problem.space.dense[resource])


@dataclass(frozen=True)
class Moves:
    """Each group moved alone to its target: the candidates, their cost change (relative
    to the limits, summed over resources; NaN where there is no such step) and whether
    they fit the budget."""

    candidates: np.ndarray
    delta: np.ndarray
    fits: np.ndarray


def single_moves(problem: Problem, levels: np.ndarray, targets: np.ndarray) -> Moves:
    """Every group's step to ``targets`` (-1: none), priced by the cost model in one pass."""
    n = len(levels)
    rows = np.arange(n)
    valid = targets >= 0
    moved = np.repeat(levels[None, :], n + 1, axis=0)  # last row: ``levels`` itself
    moved[rows, rows] = np.where(valid, targets, levels)
    used = _usage(problem, moved)
    delta = np.zeros(n)
    fits = valid.copy()
    limits = problem.constraints.limits
    for resource, values in used.items():
        delta += (values[:n] - values[n]) / _scale(problem, resource)
        if resource in limits:
            fits &= values[:n] <= limits[resource]
    return Moves(candidates=moved[:n], delta=np.where(valid, delta, np.nan), fits=fits)


def _draw(rng: np.random.Generator, weights: np.ndarray, allowed: np.ndarray) -> int | None:
    """An index among ``allowed``, proportional to ``weights`` (uniform when all are zero)."""
    candidates = np.flatnonzero(allowed)
    if len(candidates) == 0:
        return None
    w = weights[candidates]
    positive = w > 0  # NaN (no such step) and non-positive weigh nothing
    if positive.any():
        candidates, w = candidates[positive], w[positive]
    else:
        w = np.ones(len(candidates))
    cumulative = np.cumsum(w)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(candidates[min(pick, len(candidates) - 1)])


def swap(problem: Problem, levels: np.ndarray, steps: Steps, rng: np.random.Generator) -> np.ndarray | None:
    """One swap: a group pruned one step more, another one step less; None when none fits."""
    up, _ = steps(levels)
    saving = -single_moves(problem, levels, up).delta
    tried = np.zeros(len(levels), dtype=bool)
    while True:  # until a pair fits or every group to prune has been tried
        a = _draw(rng, saving, (up >= 0) & ~tried)
        if a is None:
            return None
        tried[a] = True
        raised = levels.copy()
        raised[a] = up[a]
        _, down = steps(raised)
        down[a] = -1  # giving back what was just taken is no move
        lowered = single_moves(problem, raised, down)
        b = _draw(rng, lowered.delta, lowered.fits)
        if b is not None:
            return lowered.candidates[b]


def mutate(problem: Problem, parent: np.ndarray, steps: Steps, rng: np.random.Generator,
           max_swaps: int) -> np.ndarray | None:
    """``parent`` after min(U{1..max}, U{1..max}) swaps, then filled.

    None when no swap fits the parent at all, so that no redraw can help (a child that
    undoes its own swaps comes back equal to the parent, for the caller to discard).
    """
    child = np.array(parent, dtype=np.int64)
    for i in range(number_of_swaps(rng, max_swaps)):
        moved = swap(problem, child, steps, rng)
        if moved is None:
            if i == 0:
                return None
            break
        child = moved
    return fill_steps(problem, child, steps, rng)


def fill_steps(problem: Problem, levels: np.ndarray, steps: Steps, rng: np.random.Generator) -> np.ndarray:
    """Give back one step of a random group at a time while the budget holds."""
    current = np.array(levels, dtype=np.int64)
    while True:
        _, down = steps(current)
        lowered = single_moves(problem, current, down)
        options = np.flatnonzero(lowered.fits)
        if len(options) == 0:
            return current
        current = lowered.candidates[rng.choice(options)]
