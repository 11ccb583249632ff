"""The search space a searcher sees: groups, their keep levels, and the exact cost model.

This module is pure numpy on purpose: searchers, the journal and the front work on it
without importing torch, so they are tested on synthetic spaces in milliseconds. The
torch side (:mod:`autoprune.space.analysis`) builds it from a model.

A *candidate* is an integer vector with one level per group; level 0 is dense. Many
candidates are a 2-D array (n, n_groups) and every method here is vectorised over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autoprune.space.cost import QuadraticCost
from autoprune.space.levels import LevelGrid

RESOURCES = ("flops", "params")


@dataclass(frozen=True)
class Group:
    """Channels that must be removed together, named after the layer whose outputs they are."""

    name: str
    size: int
    kept: tuple[int, ...]
    members: tuple[str, ...] = ()
    #: equal blocks the channels fall into (a grouped convolution's groups): every kept count is
    #: a multiple of it, and pruning removes the same positions in every block
    channel_groups: int = 1
    #: consecutive channels removed together (an attention head's width): every kept count is
    #: a multiple of it, and pruning removes whole units
    unit: int = 1

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "size": self.size, "kept": list(self.kept), "members": list(self.members)}
        if self.channel_groups != 1:
            data["channel_groups"] = self.channel_groups
        if self.unit != 1:
            data["unit"] = self.unit
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Group":
        return cls(
            name=data["name"], size=int(data["size"]), kept=tuple(int(k) for k in data["kept"]),
            members=tuple(data.get("members", ())), channel_groups=int(data.get("channel_groups", 1)),
            unit=int(data.get("unit", 1)),
        )


class SearchSpace:
    """Groups with a shared level grid, and FLOPs/params of any candidate.

    FLOPs are multiply-accumulates (MACs) of convolutions, linear layers and attention
    products for one input at the task's input shape, the pruning literature's convention.
    """

    def __init__(self, *, groups: list[Group], grid: LevelGrid, flops: QuadraticCost, params: QuadraticCost) -> None:
        if not groups:
            raise ValueError("a search space needs at least one prunable group")
        self.groups = list(groups)
        self.grid = grid
        self.costs = {"flops": flops, "params": params}
        self.n_levels = len(grid.keep_ratios)
        self._kept_table = np.array([g.kept for g in groups], dtype=np.int64)  # (G, L)
        dense = np.zeros(len(groups), dtype=np.int64)
        self.dense = {name: int(cost(self.kept_counts(dense))) for name, cost in self.costs.items()}

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def dense_candidate(self) -> np.ndarray:
        return np.zeros(self.n_groups, dtype=np.int64)

    def sparsest_candidate(self) -> np.ndarray:
        return np.full(self.n_groups, self.n_levels - 1, dtype=np.int64)

    def uniform_candidate(self, level: int) -> np.ndarray:
        return np.full(self.n_groups, level, dtype=np.int64)

    def check(self, levels: np.ndarray) -> np.ndarray:
        """Return ``levels`` as int64, raising ValueError if any row is out of the grid."""
        arr = np.asarray(levels)
        if arr.shape[-1] != self.n_groups:
            raise ValueError(f"a candidate has {self.n_groups} levels, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"levels must be integers, got dtype {arr.dtype}")
        if arr.min(initial=0) < 0 or arr.max(initial=0) >= self.n_levels:
            raise ValueError(f"levels must lie in [0, {self.n_levels - 1}]")
        return arr.astype(np.int64)

    def kept_counts(self, levels: np.ndarray) -> np.ndarray:
        """Kept channels per group for each candidate (same shape as ``levels``)."""
        arr = self.check(levels)
        return self._kept_table[np.arange(self.n_groups), arr]

    def cost(self, resource: str, levels: np.ndarray) -> np.ndarray:
        """Absolute ``resource`` ("flops" or "params") of each candidate."""
        if resource not in self.costs:
            raise ValueError(f"resource must be one of {RESOURCES}, got {resource!r}")
        return self.costs[resource](self.kept_counts(levels))

    def relative_cost(self, resource: str, levels: np.ndarray) -> np.ndarray:
        """``resource`` of each candidate as a fraction of the dense model's."""
        return self.cost(resource, levels) / self.dense[resource]

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [g.to_dict() for g in self.groups],
            "grid": self.grid.to_dict(),
            "flops": self.costs["flops"].to_dict(),
            "params": self.costs["params"].to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        return cls(
            groups=[Group.from_dict(g) for g in data["groups"]],
            grid=LevelGrid.from_dict(data["grid"]),
            flops=QuadraticCost.from_dict(data["flops"]),
            params=QuadraticCost.from_dict(data["params"]),
        )
