"""``random``: independent random allocations, repaired to meet the budget.

Each candidate draws every group's level uniformly, is pruned further until it fits
(:func:`repair`), then given channels back until no single step fits (:func:`fill`), so
random allocations spend the same budget as the searchers they are compared with.
"""

from __future__ import annotations

from typing import Any

from autoprune.searchers.base import Problem, Proposal, Searcher
from autoprune.searchers.repair import fill, repair


class RandomSearcher(Searcher):
    name = "random"

    def __init__(self, *, problem: Problem, seed: int = 0, use_budget: bool = True) -> None:
        super().__init__(problem=problem, seed=seed)
        if not isinstance(use_budget, bool):
            raise ValueError(f"use_budget must be True or False, got {use_budget!r}")
        self.use_budget = use_budget

    def _ask(self, n: int) -> list[Proposal]:
        proposals = []
        for _ in range(n):
            levels = self.rng.integers(0, self.space.n_levels, size=self.space.n_groups)
            levels = repair(self.problem, levels, self.rng)
            if self.use_budget:
                levels = fill(self.problem, levels, self.rng)
            proposals.append(Proposal(levels=levels))
        return proposals

    def options(self) -> dict[str, Any]:
        return {**super().options(), "use_budget": self.use_budget}
