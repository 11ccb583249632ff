"""Move a candidate onto the budget: prune more until it fits, then use what is left.

Shared by searchers that generate candidates freely (random sampling, mutation): a
candidate over budget is pruned further in groups drawn with probability proportional
to what pruning them saves, and one well under budget gives channels back until no
single step fits, so compared allocations spend (nearly) the same budget.
"""

from __future__ import annotations

import numpy as np

from autoprune.searchers.base import Problem


def _neighbours(levels: np.ndarray, step: int, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """All candidates one level step away in one group, and which groups can take the step."""
    moved = np.repeat(levels[None, :], len(levels), axis=0)
    idx = np.arange(len(levels))
    moved[idx, idx] += step
    valid = (moved[idx, idx] >= 0) & (moved[idx, idx] < n_levels)
    moved[idx, idx] = np.clip(moved[idx, idx], 0, n_levels - 1)
    return moved, valid


def repair(problem: Problem, levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Prune more, group by group, until ``levels`` is within every FLOPs/params limit.

    Each step raises the level of one group, drawn with probability proportional to the
    cost it saves (the sum over bounded resources, each relative to its limit; latency as
    the latency model predicts it).
    """
    space = problem.space
    constraints = problem.constraints
    current = np.array(levels, dtype=np.int64)
    while not problem.feasible(current)[0]:
        moved, valid = _neighbours(current, +1, space.n_levels)
        saving = np.zeros(len(current))
        now = constraints.usage(space, current)
        after = constraints.usage(space, moved)
        for resource, limit in constraints.limits.items():
            saving += (now[resource] - after[resource]) / limit
        weights = np.where(valid, np.maximum(saving, 0.0), 0.0)
        if weights.sum() <= 0:
            # rounding can make neighbouring levels keep the same count: a step that saves
            # nothing now may enable one that does, so fall back to any valid group
            weights = valid.astype(float)
        if weights.sum() <= 0:
            raise RuntimeError("cannot repair: no group can be pruned further (the budget check should have caught this)")
        g = rng.choice(len(current), p=weights / weights.sum())
        current[g] += 1
    return current


def fill(problem: Problem, levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give channels back, one level of a random group at a time, while the budget holds."""
    space = problem.space
    current = np.array(levels, dtype=np.int64)
    while True:
        moved, valid = _neighbours(current, -1, space.n_levels)
        options = np.flatnonzero(valid & problem.feasible(moved))
        if len(options) == 0:
            return current
        current[rng.choice(options)] -= 1
