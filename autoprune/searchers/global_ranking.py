"""``global``: Torch-Pruning's global channel ranking, the allocation its users get today.

With ``global_pruning=True`` Torch-Pruning's ``MetaPruner`` scores every channel of every
group with an importance criterion, normalises each group's scores by their mean (its
importances' default ``normalizer="mean"``), concatenates them and removes the lowest
across the whole network: the layer-wise allocation falls out of one global ranking.
Its users then raise the pruning ratio until a FLOPs target is met.

As built here: the scores come from Torch-Pruning's own importance classes on the dense
model (``magnitude``: ``GroupMagnitudeImportance(p=2)``, the default; ``taylor``:
``GroupTaylorImportance`` after one backward pass on a calibration batch; ``bn_scale``:
``BNScaleImportance``), computed on the torch side and handed over through
``Problem.channel_scores``. Channels are removed lowest first, never below a group's
sparsest level; each group's kept count is snapped up to the next level of the grid
(a finer grid: ``level_step`` in ``--space``), and the cut is the fewest removals whose
snapped candidate meets every budget. One candidate, like ``uniform``.

The ranking decides how many channels each group keeps; which ones is the evaluator's
choice (L2 magnitude, as for every searcher), so with ``taylor`` the kept channels of a
group may differ from the ones Torch-Pruning would keep.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from autoprune.searchers.base import Problem, Proposal, Searcher

logger = logging.getLogger(__name__)

#: the importance criteria, named as Torch-Pruning's classes (see autoprune.space.channel_scores)
IMPORTANCES = ("magnitude", "taylor", "bn_scale")


class GlobalSearcher(Searcher):
    name = "global"

    def __init__(self, *, problem: Problem, seed: int = 0, importance: str = "magnitude") -> None:
        super().__init__(problem=problem, seed=seed)
        if importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}")
        if problem.channel_scores is None:
            raise ValueError("it ranks channels by Torch-Pruning's importance scores, which a language model does "
                             "not have; use dp, or an evolutionary searcher such as darwin, tyr or emo")
        self.importance = importance
        self.removed: int | None = None

    def _ask(self, n: int) -> list[Proposal]:
        self.finished = True
        assert self.problem.channel_scores is not None
        scores = self.problem.channel_scores(self.importance)
        levels = self.allocate(scores)
        return [] if levels is None else [Proposal(levels=levels)]

    def allocate(self, scores: list[np.ndarray]) -> np.ndarray | None:
        """The candidate of the fewest global removals that meets every budget (None: none does)."""
        space = self.space
        if len(scores) != space.n_groups:
            raise ValueError(f"channel scores name {len(scores)} groups, the space has {space.n_groups}")
        kept = np.array([g.kept for g in space.groups], dtype=np.int64)  # (G, L), decreasing along L
        order_group, order_rank = [], []
        for g, values in enumerate(scores):
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (space.groups[g].size,):
                raise ValueError(f"group {space.groups[g].name!r} has {space.groups[g].size} channels, "
                                 f"its scores {values.shape}")
            removable = space.groups[g].size - int(kept[g, -1])
            ranked = np.sort(values, kind="stable")[:removable]  # its least important channels, ascending
            order_group.append(np.full(removable, g))
            order_rank.append(ranked)
        groups = np.concatenate(order_group) if order_group else np.zeros(0, dtype=np.int64)
        values = np.concatenate(order_rank) if order_rank else np.zeros(0)
        order = np.lexsort((groups, values))  # lowest score first; ties by group, deterministically
        removal_group = groups[order]
        sizes = np.array([g.size for g in space.groups], dtype=np.int64)

        def candidate(removed: int) -> np.ndarray:
            counts = np.bincount(removal_group[:removed], minlength=space.n_groups)
            target = sizes - counts
            # snap up: the sparsest level that still keeps at least the ranking's count
            return np.array([int(np.nonzero(kept[g] >= target[g])[0].max()) for g in range(space.n_groups)],
                            dtype=np.int64)

        low, high = 0, len(removal_group)
        if not self.problem.feasible(candidate(high))[0]:
            return None
        while low < high:  # the fewest removals whose snapped candidate fits (cost falls as removals grow)
            middle = (low + high) // 2
            if self.problem.feasible(candidate(middle))[0]:
                high = middle
            else:
                low = middle + 1
        self.removed = low
        logger.info("global: %s ranking removes %d of %d removable channels", self.importance, low,
                    len(removal_group))
        return candidate(low)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "importance": self.importance}
