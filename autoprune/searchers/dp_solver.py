"""Least total distortion under coupled budgets, by dynamic programming (no torch).

The ``dp`` searcher (Xu et al., ICCV 2023) picks one level per group so that the sum of
per-group distortions is least while every budget holds. In the paper's code the cost of
a layer is its own parameter count, a knapsack. Here a layer's FLOPs are the product of
its input and output kept channels, so a group's cost depends on its neighbours' levels.
Every resource autoprune bounds is exactly a sum of *unary* terms (one group's level) and
*pairwise* terms (two groups' levels): the quadratic cost model's ``k·A·k`` and presence
terms, and the latency model's per-layer tables over (input level, output level).

The solver is exact for that structure. Groups are assigned one at a time in an order
chosen to keep the *frontier* small: the assigned groups that still share a pairwise
term with an unassigned one. The DP state is the frontier's levels and the spent cost;
assigning a group adds its unary term and its pairwise terms with the frontier, and a
frontier member whose neighbours are all assigned is minimised out (its best level
recorded for the way back). A chain keeps one group on the frontier, a residual stage
(a shared channel group with its blocks' inner groups hanging off it) one or two. Memory
is ``levels ** frontier × buckets`` per step, so a model whose coupling needs a wide
frontier is refused rather than approximated.

The cost axis is bucketed so memory does not grow with raw FLOPs: each resource's
capacity above its least possible cost is split into ``buckets`` equal cells, and every
increment is rounded *up* to whole cells. A plan the DP calls feasible is therefore
feasible exactly; what rounding can cost is at most one cell per group of budget left
unused. When every cost is a whole number and the capacity fits in ``buckets`` cells, a
cell is one unit and the DP is exact (the tests hold it to brute force there).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from autoprune.searchers.base import Problem
from autoprune.space.cost import QuadraticCost
from autoprune.space.latency_model import LatencyModel

logger = logging.getLogger(__name__)

#: the most groups the greedy elimination order is tried for (it takes cubic time)
GREEDY_MAX_GROUPS = 64
#: the most DP cells (frontier states × cost cells) one step may hold (160 MB of float64):
#: beyond it the cost axis gets fewer cells, and below MIN_CELLS the space is refused
MAX_STATE_CELLS = 20_000_000
MIN_CELLS = 16


class CouplingTooWide(ValueError):
    """The groups' coupling needs a frontier too wide for the DP's memory."""


@dataclass
class PairwiseCost:
    """One bounded resource as ``constant + sum unary[g, l_g] + sum pairs[(g, h)][l_g, l_h]``
    in *units* (the quadratic cost's numerator, or latency-table milliseconds), with the
    map from a real limit to a limit in units (``denominator``: the cost model's floor
    division; ``scale``, ``offset``: the latency model's calibration)."""

    name: str
    constant: float
    unary: np.ndarray
    pairs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    integral: bool = True
    denominator: int = 1
    scale: float = 1.0
    offset: float = 0.0

    def units_limit(self, real_limit: float) -> float:
        """The largest total in units that a real ``real_limit`` allows."""
        if self.integral:
            return float(math.floor(real_limit) * self.denominator + self.denominator - 1)
        return (real_limit - self.offset) / self.scale

    def total(self, levels: np.ndarray) -> float:
        """The resource's total in units for one level vector (for checks)."""
        value = self.constant + float(self.unary[np.arange(len(levels)), levels].sum())
        for (g, h), table in self.pairs.items():
            value += float(table[levels[g], levels[h]])
        return value

    def normalised(self) -> "PairwiseCost":
        """The same cost with every table shifted to a least entry of 0 (the constant takes it),
        so every DP increment is non-negative."""
        unary = self.unary.astype(np.float64)
        shift = unary.min(axis=1)
        constant = self.constant + float(shift.sum())
        pairs = {}
        for key, table in self.pairs.items():
            least = float(table.min())
            constant += least
            pairs[key] = table.astype(np.float64) - least
        return PairwiseCost(name=self.name, constant=constant, unary=unary - shift[:, None], pairs=pairs,
                            integral=self.integral, denominator=self.denominator, scale=self.scale,
                            offset=self.offset)


def quadratic_pairwise(name: str, cost: QuadraticCost, kept: np.ndarray) -> PairwiseCost:
    """A quadratic cost model (``kept``: kept counts per group and level) as unary and pairwise tables."""
    k = np.asarray(kept, dtype=np.int64)
    unary = (cost.linear[:, None] * k + np.diagonal(cost.quadratic)[:, None] * k * k
             + cost.presence[:, None] * (k > 0))
    pairs: dict[tuple[int, int], np.ndarray] = {}
    n = cost.n_groups
    for g in range(n):
        for h in range(g + 1, n):
            weight = int(cost.quadratic[g, h] + cost.quadratic[h, g])
            if weight:
                pairs[(g, h)] = weight * np.outer(k[g], k[h])
    return PairwiseCost(name=name, constant=float(cost.constant), unary=unary.astype(np.float64), pairs=pairs,
                        integral=True, denominator=int(cost.denominator))


def latency_pairwise(model: LatencyModel, n_groups: int, n_levels: int) -> PairwiseCost:
    """The latency model's per-layer tables as unary and pairwise tables (milliseconds before
    its calibration ``scale * sum + offset``)."""
    if model.scale <= 0:
        raise ValueError(f"a latency model with a non-positive scale ({model.scale}) cannot bound a DP")
    constant = 0.0
    unary = np.zeros((n_groups, n_levels))
    pairs: dict[tuple[int, int], np.ndarray] = {}
    levels = np.arange(n_levels)
    for layer in model.layers:
        table = np.asarray(layer.table, dtype=np.float64)
        a, b = layer.in_group, layer.out_group
        if a < 0 and b < 0:
            constant += float(table[0, 0])
        elif a < 0:
            unary[b] += table[0, :]
        elif b < 0:
            unary[a] += table[:, 0]
        elif a == b:
            unary[a] += table[levels, levels]
        else:
            key, oriented = ((a, b), table) if a < b else ((b, a), table.T)
            pairs[key] = pairs.get(key, 0.0) + oriented
    return PairwiseCost(name="latency", constant=constant, unary=unary, pairs=pairs, integral=False,
                        scale=float(model.scale), offset=float(model.offset))


def problem_costs(problem: Problem) -> list[PairwiseCost]:
    """Every bounded resource of ``problem`` as a :class:`PairwiseCost`."""
    space = problem.space
    kept = np.array([g.kept for g in space.groups], dtype=np.int64)
    costs = []
    for resource in problem.constraints.limits:
        if resource == "latency":
            if problem.constraints.latency_model is None:
                raise ValueError("a latency limit needs a latency model")
            costs.append(latency_pairwise(problem.constraints.latency_model, space.n_groups, space.n_levels))
        else:
            costs.append(quadratic_pairwise(resource, space.costs[resource], kept))
    return costs


def elimination_order(n_groups: int, edges: set[tuple[int, int]]) -> tuple[list[int], int]:
    """An order of the groups with a small largest frontier, and that frontier's size.

    Tries the groups' own order (a network's layers in sequence), its reverse and a greedy
    order (next: the group that leaves the fewest assigned groups with unassigned neighbours)."""
    neighbours: dict[int, set[int]] = {g: set() for g in range(n_groups)}
    for g, h in edges:
        neighbours[g].add(h)
        neighbours[h].add(g)

    def width(order: list[int]) -> int:
        """The most groups' levels the state holds: the frontier plus the group being added."""
        assigned: set[int] = set()
        frontier: list[int] = []
        widest = 0
        for g in order:
            widest = max(widest, len(frontier) + 1)
            assigned.add(g)
            frontier = [h for h in frontier + [g] if neighbours[h] - assigned]
        return widest

    def greedy() -> list[int]:
        assigned: set[int] = set()
        order: list[int] = []
        for _ in range(n_groups):
            best, best_size = -1, n_groups + 1
            for g in range(n_groups):
                if g in assigned:
                    continue
                trial = assigned | {g}
                size = sum(1 for h in trial if neighbours[h] - trial)
                if size < best_size:
                    best, best_size = g, size
            assigned.add(best)
            order.append(best)
        return order

    candidates = [list(range(n_groups)), list(range(n_groups - 1, -1, -1))]
    if n_groups <= GREEDY_MAX_GROUPS:
        candidates.append(greedy())
    widths = [width(order) for order in candidates]
    i = int(np.argmin(widths))
    return candidates[i], widths[i]


@dataclass
class _Step:
    group: int
    neighbours: list[int]  # frontier members it shares pairwise terms with
    increments: np.ndarray  # (L, L, ..., n_resources): cells added, by (l_g, l_n...)
    drops: list[tuple[int, list[int], np.ndarray]]  # (group, frontier before the drop, argmin)


class DPSolution:
    """The DP's final table: the least total distortion for every spent cost cell, and the
    way back to the levels that reach it, for any budget up to the one solved for."""

    def __init__(self, *, best: np.ndarray, steps: list[_Step], costs: list[PairwiseCost], cell: np.ndarray,
                 base: np.ndarray, n_groups: int, frontier: int) -> None:
        self._best = best
        self._steps = steps
        self._costs = costs
        self._cell = cell
        self._base = base  # the least total of each resource, in units
        self.n_groups = n_groups
        #: the widest frontier the elimination order needed
        self.frontier = frontier

    def cells_for(self, real_limits: dict[str, float]) -> tuple[int, ...] | None:
        """The highest cost cell allowed per resource under ``real_limits`` (None: none fits)."""
        cells = []
        for r, cost in enumerate(self._costs):
            room = cost.units_limit(real_limits[cost.name]) - self._base[r]
            if room < -1e-9:
                return None
            cells.append(min(int(math.floor(room / self._cell[r] + 1e-9)), self._best.shape[r] - 1))
        return tuple(cells)

    def allocate(self, real_limits: dict[str, float]) -> tuple[np.ndarray, float] | None:
        """The least-distortion levels within ``real_limits`` (a limit per resource solved
        for, at most the solved ones) and their total distortion; None when nothing fits."""
        top = self.cells_for(real_limits)
        if top is None:
            return None
        box = self._best[tuple(slice(0, c + 1) for c in top)]
        flat = int(np.argmin(box))
        value = float(box.flat[flat])
        if not np.isfinite(value):
            return None
        cell = list(np.unravel_index(flat, box.shape))
        return self._trace(cell), value

    def _trace(self, cell: list[int]) -> np.ndarray:
        levels = np.full(self.n_groups, -1, dtype=np.int64)
        sizes = self._best.shape
        for step in reversed(self._steps):
            flat = int(np.ravel_multi_index(tuple(cell), sizes))
            for group, frontier, argmin in reversed(step.drops):
                index = tuple(int(levels[h]) for h in frontier if h != group) + (flat,)
                levels[group] = int(argmin[index])
            key = (int(levels[step.group]),) + tuple(int(levels[h]) for h in step.neighbours)
            cell = [c - int(i) for c, i in zip(cell, step.increments[key])]
        if any(c != 0 for c in cell) or (levels < 0).any():
            raise RuntimeError(f"the DP's way back did not end at its start (cell {cell}, levels {levels.tolist()})")
        return levels


def solve(distortion: np.ndarray, costs: list[PairwiseCost], real_limits: dict[str, float], *,
          buckets: int = 2000) -> DPSolution:
    """Tabulate least total ``distortion`` (shape (groups, levels); ``inf`` bars a level)
    for every cost up to ``real_limits`` (one limit per cost, by name).

    ``buckets``: cost cells per resource for one resource; with several, each gets about
    ``buckets ** (1 / n)`` so the table stays the same size.
    """
    d = np.asarray(distortion, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"distortion must have shape (groups, levels), got {d.shape}")
    n_groups, n_levels = d.shape
    if not costs:
        raise ValueError("the DP needs at least one bounded resource")
    if not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive integer, got {buckets!r}")
    norm = [c.normalised() for c in costs]
    edges = set()
    for cost in norm:
        edges.update(key for key, table in cost.pairs.items() if np.any(table != 0))
    order, width = elimination_order(n_groups, edges)
    per_resource = max(1, int(round(buckets ** (1.0 / len(norm)))))
    fits = int((MAX_STATE_CELLS / n_levels ** width) ** (1.0 / len(norm))) - 1
    if fits < MIN_CELLS:
        raise CouplingTooWide(
            f"the groups' FLOPs/params coupling needs {width} groups' levels in the DP state, which leaves "
            f"fewer than {MIN_CELLS} cost cells within {MAX_STATE_CELLS:,} cells; use fewer levels")
    if fits < per_resource:
        logger.warning("dp: %d cost cells per resource instead of %d, so that %d groups' levels fit in the DP state",
                       fits, per_resource, width)
        per_resource = fits
    base = np.array([c.constant for c in norm])
    cells, sizes = [], []
    for r, cost in enumerate(norm):
        room = cost.units_limit(real_limits[cost.name]) - base[r]
        room = max(room, 0.0)
        whole = cost.integral and all(np.allclose(t, np.round(t)) for t in [cost.unary, *cost.pairs.values()])
        if whole and room <= per_resource:
            cell, size = 1.0, int(math.floor(room + 1e-9)) + 1  # one unit per cell: exact
        else:
            cell, size = (room / per_resource if room > 0 else 1.0), per_resource + 1
        cells.append(cell)
        sizes.append(size)
    cell_arr = np.array(cells)
    neighbours: dict[int, set[int]] = {g: set() for g in range(n_groups)}
    for g, h in edges:
        neighbours[g].add(h)
        neighbours[h].add(g)

    def pair_table(cost: PairwiseCost, g: int, h: int) -> np.ndarray | None:
        if (g, h) in cost.pairs:
            return cost.pairs[(g, h)]
        if (h, g) in cost.pairs:
            return cost.pairs[(h, g)].T
        return None

    # the cost cells are one flat axis; a cell's coordinates per resource, for shifting it
    n_cells = int(np.prod(sizes))
    coords = np.stack(np.unravel_index(np.arange(n_cells), sizes), axis=1)  # (cells, resources)
    strides = np.array([int(np.prod(sizes[r + 1:])) for r in range(len(sizes))], dtype=np.int64)
    table = np.full(n_cells, np.inf)
    table[0] = 0.0
    frontier: list[int] = []
    assigned: set[int] = set()
    steps: list[_Step] = []
    for g in order:
        near = [h for h in frontier if h in neighbours[g]]
        shape = (n_levels,) * (1 + len(near))
        increments = np.zeros(shape + (len(norm),), dtype=np.int64)
        for r, cost in enumerate(norm):
            units = np.broadcast_to(cost.unary[g].reshape((n_levels,) + (1,) * len(near)), shape).copy()
            for j, h in enumerate(near):
                pair = pair_table(cost, g, h)
                if pair is not None:
                    view = [1] * (1 + len(near))
                    view[0], view[1 + j] = n_levels, n_levels
                    units = units + pair.reshape(view)
            increments[..., r] = np.ceil(units / cells[r] - 1e-9).astype(np.int64)
        new = np.full(table.shape[: len(frontier)] + (n_levels, n_cells), np.inf)
        for combo in itertools.product(range(n_levels), repeat=len(near)):
            # every level of g at once: cell c comes from cell c - increment, where that exists
            inc = increments[(slice(None),) + combo]  # (levels, resources)
            before = coords[None, :, :] - inc[:, None, :]  # (levels, cells, resources)
            valid = (before >= 0).all(axis=2)
            source_cell = np.where(valid, before @ strides, 0)
            fixed = dict(zip(near, combo))
            head = tuple(fixed.get(h, slice(None)) for h in frontier)
            gathered = table[head][..., source_cell]  # (free frontier..., levels, cells)
            new[head] = np.where(valid, gathered, np.inf) + d[g][:, None]
        table = new
        frontier = frontier + [g]
        assigned.add(g)
        drops = []
        for h in list(frontier):
            if neighbours[h] <= assigned:
                axis = frontier.index(h)
                choice = np.argmin(table, axis=axis).astype(np.int16)
                table = np.min(table, axis=axis)
                drops.append((h, list(frontier), choice))
                frontier.remove(h)
        steps.append(_Step(group=g, neighbours=near, increments=increments, drops=drops))
    assert not frontier and table.shape == (n_cells,), (frontier, table.shape)
    return DPSolution(best=table.reshape(sizes), steps=steps, costs=norm, cell=cell_arr, base=base, n_groups=n_groups,
                      frontier=width)
