"""``uniform``: the same keep level in every group, the least pruning that meets the budget.

The baseline every pruning paper beats. It proposes exactly one candidate.
"""

from __future__ import annotations

from autoprune.searchers.base import Proposal, Searcher


class UniformSearcher(Searcher):
    name = "uniform"

    def _ask(self, n: int) -> list[Proposal]:
        self.finished = True
        # The sparsest uniform level can miss a budget that mixed levels meet; the budget
        # check only guarantees the sparsest candidate fits, which is uniform too.
        candidate = self.problem.least_pruning_uniform()
        return [] if candidate is None else [Proposal(levels=candidate)]
