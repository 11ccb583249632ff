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
#: a swap tries this many groups to prune before giving up (no partner fits any of them)
SWAP_TRIES = 8


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


def _resources(problem: Problem) -> list[tuple[str, float]]:
    """The bounded FLOPs/params limits, or dense FLOPs when only latency is bounded."""
    limits = problem.constraints.limits
    bounded = [(r, float(limits[r])) for r in ("flops", "params") if r in limits]
    return bounded or [("flops", float(problem.space.dense["flops"]))]


def step_costs(problem: Problem, levels: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cost change of moving each group alone to its target (relative to the limits, summed).

    Entries where the target is -1 (no such step) are NaN.
    """
    n = len(levels)
    moved = np.repeat(levels[None, :], n, axis=0)
    valid = targets >= 0
    moved[np.arange(n), np.arange(n)] = np.where(valid, targets, levels)
    delta = np.zeros(n)
    for resource, scale in _resources(problem):
        base = float(problem.space.cost(resource, levels))
        delta += (problem.space.cost(resource, moved) - base) / scale
    return np.where(valid, delta, np.nan)


def _draw(rng: np.random.Generator, weights: np.ndarray, allowed: np.ndarray) -> int | None:
    """An index among ``allowed``, proportional to ``weights`` (uniform when all are zero)."""
    if not allowed.any():
        return None
    w = np.where(allowed, np.maximum(np.nan_to_num(weights), 0.0), 0.0)
    if w.sum() <= 0:
        w = allowed.astype(float)
    return int(rng.choice(len(w), p=w / w.sum()))


def swap(problem: Problem, levels: np.ndarray, steps: Steps, rng: np.random.Generator) -> np.ndarray | None:
    """One swap: a group pruned one step more, another one step less; None when none fits."""
    up, _ = steps(levels)
    saving = -step_costs(problem, levels, up)
    tried = np.zeros(len(levels), dtype=bool)
    for _ in range(SWAP_TRIES):
        a = _draw(rng, saving, (up >= 0) & ~tried)
        if a is None:
            return None
        tried[a] = True
        raised = levels.copy()
        raised[a] = up[a]
        _, down = steps(raised)
        down[a] = -1  # giving back what was just taken is no move
        extra = step_costs(problem, raised, down)
        lowered = np.repeat(raised[None, :], len(levels), axis=0)
        rows = np.arange(len(levels))
        lowered[rows, rows] = np.where(down >= 0, down, raised)
        fits = (down >= 0) & problem.feasible(lowered)
        b = _draw(rng, extra, fits)
        if b is not None:
            return lowered[b]
    return None


def mutate(problem: Problem, parent: np.ndarray, steps: Steps, rng: np.random.Generator,
           max_swaps: int) -> np.ndarray | None:
    """``parent`` after min(U{1..max}, U{1..max}) swaps, then filled; None if no swap fits."""
    child = np.array(parent, dtype=np.int64)
    for _ in range(number_of_swaps(rng, max_swaps)):
        moved = swap(problem, child, steps, rng)
        if moved is None:
            break
        child = moved
    if np.array_equal(child, parent):
        return None
    return fill_steps(problem, child, steps, rng)


def fill_steps(problem: Problem, levels: np.ndarray, steps: Steps, rng: np.random.Generator) -> np.ndarray:
    """Give back one step of a random group at a time while the budget holds."""
    current = np.array(levels, dtype=np.int64)
    rows = np.arange(len(current))
    while True:
        _, down = steps(current)
        lowered = np.repeat(current[None, :], len(current), axis=0)
        lowered[rows, rows] = np.where(down >= 0, down, current)
        options = np.flatnonzero((down >= 0) & problem.feasible(lowered))
        if len(options) == 0:
            return current
        current = lowered[rng.choice(options)]
