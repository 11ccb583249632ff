"""Synthetic search spaces and objectives with known optima, for testing searchers.

Searchers import no torch, so they are tested here on spaces built without a model, in
milliseconds. Two shapes of cost matter:

- :func:`chain_space`: a plain chain of layers, so FLOPs and params are *quadratic* in
  the kept counts (layer ``i`` costs ``kept[i-1] * kept[i]``), as in a real CNN;
- :func:`separable_space`: every group costs a fixed price per kept channel, so the
  budget is *linear* and, with a separable concave quality (:func:`separable_quality`),
  the best allocation is known exactly (:func:`exact_optimum`), which lets a test demand
  that a searcher get within 1% of it.

Numpy only: nothing here may import torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from autoprune.searchers.base import ChannelScores, Problem
from autoprune.space.budget import parse_budget, resolve
from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.latency_model import LatencyModel, LayerTable
from autoprune.space.levels import LevelGrid
from autoprune.space.search_space import Group, SearchSpace
from autoprune.space.stage_split import OUTPUT, StageSplit

#: the most cost units :func:`exact_optimum` tabulates before asking for a smaller space
MAX_DP_CELLS = 20_000_000
#: the most candidates :func:`all_candidates` enumerates (brute force is for tiny spaces)
MAX_ENUMERATED = 200_000


def _groups(sizes: Sequence[int], grid: LevelGrid, prefix: str) -> list[Group]:
    """One group per size, validated, so a typo in a test fails with a clear message."""
    if len(sizes) == 0:
        raise ValueError("sizes must name at least one group, got []")
    groups = []
    for i, size in enumerate(sizes):
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"sizes[{i}] must be a positive integer, got {size!r}")
        groups.append(Group(name=f"{prefix}{i}", size=int(size), kept=grid.kept(int(size))))
    return groups


def _per_group(value: int | Sequence[int], n: int, name: str) -> list[int]:
    """Broadcast one integer to every group, or check a per-group sequence."""
    values = [int(value)] * n if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per group ({n}), got {len(values)}")
    if any(v < 0 for v in values):
        raise ValueError(f"{name} must be non-negative, got {values}")
    return values


def chain_space(
    sizes: Sequence[int],
    grid: LevelGrid,
    *,
    in_channels: int = 3,
    positions: int | Sequence[int] = 64,
    n_classes: int = 10,
) -> SearchSpace:
    """A chain of convolutions (one group per layer's outputs) followed by a linear head.

    Layer ``i`` costs ``kept[i-1] * kept[i] * positions[i]`` MACs (layer 0 reads the
    ``in_channels`` fixed inputs) and ``kept[i-1] * kept[i] + kept[i]`` params (weights and
    bias), so both resources are quadratic in the kept counts, coupling neighbouring groups
    the way real networks do. The head maps the last group to ``n_classes`` outputs.
    """
    groups = _groups(sizes, grid, "conv")
    n = len(groups)
    if in_channels < 1 or n_classes < 1:
        raise ValueError(f"in_channels and n_classes must be positive, got {in_channels} and {n_classes}")
    spatial = _per_group(positions, n, "positions")
    flops, params = QuadraticCost(n_groups=n), QuadraticCost(n_groups=n)
    previous = LinearCount(constant=in_channels)
    for i in range(n):
        outputs = LinearCount(terms={i: 1})
        flops.add_product(previous, outputs, spatial[i])
        params.add_product(previous, outputs, 1)
        params.add_count(outputs, 1)
        previous = outputs
    head = LinearCount(constant=n_classes)
    flops.add_product(previous, head, 1)
    params.add_product(previous, head, 1)
    params.add_count(head, 1)
    return SearchSpace(groups=groups, grid=grid, flops=flops, params=params)


def residual_space(
    stage_widths: Sequence[int],
    grid: LevelGrid,
    *,
    blocks: int = 2,
    in_channels: int = 3,
    positions: int = 16,
    n_classes: int = 10,
) -> SearchSpace:
    """A CIFAR-style ResNet's coupling: per stage one group shared by the stem or shortcut
    and every block's output (the residual sum), and one inner group per block.

    A block costs ``stage * inner`` twice (its two convolutions); the first block of a later
    stage reads the previous stage (its first convolution and a 1x1 shortcut), so the
    previous stage, that block's inner group and the new stage are coupled in a triangle.
    Groups are numbered stage by stage: the stage group, then its blocks' inner groups.
    """
    if blocks < 1:
        raise ValueError(f"blocks must be a positive integer, got {blocks!r}")
    sizes: list[int] = []
    stage_index: list[int] = []
    inner_index: list[list[int]] = []
    for width in stage_widths:
        stage_index.append(len(sizes))
        sizes.append(int(width))
        inner_index.append([])
        for _ in range(blocks):
            inner_index[-1].append(len(sizes))
            sizes.append(int(width))
    groups = _groups(sizes, grid, "g")
    n = len(groups)
    flops, params = QuadraticCost(n_groups=n), QuadraticCost(n_groups=n)

    def layer(a: LinearCount, b: LinearCount, spatial: int) -> None:
        flops.add_product(a, b, spatial)
        params.add_product(a, b, 1)
        params.add_count(b, 2)  # a BatchNorm's weight and bias

    layer(LinearCount(constant=in_channels), LinearCount(terms={stage_index[0]: 1}), positions)
    previous: LinearCount | None = None
    for s, stage in enumerate(stage_index):
        here = LinearCount(terms={stage: 1})
        for b, inner in enumerate(inner_index[s]):
            reads = previous if (b == 0 and previous is not None) else here
            layer(reads, LinearCount(terms={inner: 1}), positions)
            layer(LinearCount(terms={inner: 1}), here, positions)
            if b == 0 and previous is not None:
                layer(previous, here, positions)  # the 1x1 shortcut
        previous = here
    head = LinearCount(constant=n_classes)
    assert previous is not None
    flops.add_product(previous, head, 1)
    params.add_product(previous, head, 1)
    params.add_count(head, 1)
    return SearchSpace(groups=groups, grid=grid, flops=flops, params=params)


def separable_space(
    sizes: Sequence[int],
    grid: LevelGrid,
    *,
    flops_per_channel: int | Sequence[int] | None = None,
    params_per_channel: int | Sequence[int] | None = None,
    constant_flops: int = 0,
    constant_params: int = 0,
) -> SearchSpace:
    """Groups priced independently: each kept channel of group ``g`` costs a fixed amount.

    The default prices differ between groups (1 to 4 MACs, 1 to 3 params per channel), so
    where to prune matters; the costs are :class:`QuadraticCost` with only a linear part
    (plus an unprunable constant), which makes the budget a knapsack constraint.
    """
    groups = _groups(sizes, grid, "unit")
    n = len(groups)
    flops_price = _per_group([1 + g % 4 for g in range(n)] if flops_per_channel is None else flops_per_channel,
                             n, "flops_per_channel")
    params_price = _per_group([1 + (g + 2) % 3 for g in range(n)] if params_per_channel is None
                              else params_per_channel, n, "params_per_channel")
    if constant_flops < 0 or constant_params < 0:
        raise ValueError(f"constants must be non-negative, got {constant_flops} and {constant_params}")
    flops = QuadraticCost(n_groups=n, constant=int(constant_flops), linear=np.array(flops_price))
    params = QuadraticCost(n_groups=n, constant=int(constant_params), linear=np.array(params_price))
    return SearchSpace(groups=groups, grid=grid, flops=flops, params=params)


def chain_latency_model(space: SearchSpace, *, in_channels: int = 3, ms_per_mac: float = 1e-6) -> LatencyModel:
    """A latency model for a :func:`chain_space`: each layer's milliseconds proportional to
    its kept input times output channels, so searchers can be tested on a latency budget or
    objective without measuring anything (its shape need not be a real device's)."""
    kept = [np.asarray(g.kept, dtype=np.float64) for g in space.groups]
    layers = [LayerTable(name="conv0", in_group=-1, out_group=0, table=in_channels * kept[0][None, :] * ms_per_mac)]
    for i in range(1, space.n_groups):
        layers.append(LayerTable(name=f"conv{i}", in_group=i - 1, out_group=i,
                                 table=np.outer(kept[i - 1], kept[i]) * ms_per_mac))
    return LatencyModel(layers=layers)


class SeparableQuality:
    """``quality = sum_g w_g * f(kept_g / size_g)`` with ``f(r) = 1 - (1 - r)**2``.

    ``f`` is increasing and concave: the first channels a group gets back are worth the
    most, as accuracy behaves, and it is what makes the greedy rule (nearly) optimal.
    Dense quality is ``sum(w)``; :meth:`accuracy` rescales to [0, 1] for ``Result`` metrics.
    """

    def __init__(self, space: SearchSpace, weights: Sequence[float]) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (space.n_groups,):
            raise ValueError(f"weights must have one entry per group ({space.n_groups}), got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
        self.space = space
        self.weights = w
        sizes = np.array([g.size for g in space.groups], dtype=np.float64)
        ratios = np.array([g.kept for g in space.groups], dtype=np.float64) / sizes[:, None]
        #: value of each group at each level, shape (n_groups, n_levels)
        self.table = w[:, None] * (1.0 - (1.0 - ratios) ** 2)
        self.dense_value = float(self.table[:, 0].sum())

    def __call__(self, levels: np.ndarray) -> np.ndarray:
        """Quality of each candidate (rows of ``levels``; a 1-D vector gives a 0-d array)."""
        arr = self.space.check(levels)
        return self.table[np.arange(self.space.n_groups), arr].sum(axis=-1)

    def accuracy(self, levels: np.ndarray) -> np.ndarray:
        """Quality relative to the dense model's, in [0, 1]."""
        return self(levels) / self.dense_value


def separable_quality(space: SearchSpace, weights: Sequence[float]) -> SeparableQuality:
    """The known objective of :class:`SeparableQuality` on ``space``."""
    return SeparableQuality(space, weights)


def stages_in_order(space: SearchSpace, stage_of_group: Sequence[int]) -> StageSplit:
    """A synthetic stage split: group ``g`` in stage ``stage_of_group[g]`` (stages numbered
    from 0 in order, each owning a group), each boundary named after the last group of its
    stage (the names :func:`~autoprune.testing.driver.feature_distortions` reports) and
    carrying it, the last one the output."""
    owner = tuple(int(s) for s in stage_of_group)
    if len(owner) != space.n_groups or sorted(set(owner)) != list(range(max(owner) + 1)):
        raise ValueError(f"stage_of_group must number every group's stage from 0 up, got {list(owner)}")
    last = [max(g for g, s in enumerate(owner) if s == stage) for stage in range(max(owner) + 1)]
    boundaries = tuple(space.groups[g].name for g in last[:-1]) + (OUTPUT,)
    return StageSplit(boundaries=boundaries, owner=owner, carried=tuple(last[:-1]) + (None,))


def even_stages(space: SearchSpace, n_stages: int) -> StageSplit:
    """:func:`stages_in_order` with the groups split into ``n_stages`` runs of near-equal length."""
    return stages_in_order(space, [g * n_stages // space.n_groups for g in range(space.n_groups)])


def make_problem(space: SearchSpace, budget_ratio: float, *, params_ratio: float | None = None) -> Problem:
    """A problem bounding FLOPs (and optionally params) relative to the dense model.

    Resolved through :mod:`autoprune.space.budget`, so an unreachable ratio is refused
    exactly as a user's ``--budget flops=...`` would be.
    """
    budgets = [parse_budget(f"flops={float(budget_ratio)!r}")]
    if params_ratio is not None:
        budgets.append(parse_budget(f"params={float(params_ratio)!r}"))
    return Problem(space=space, constraints=resolve(budgets, space), channel_scores=synthetic_channel_scores(space))


#: the criteria :func:`synthetic_channel_scores` answers (those of ``autoprune.searchers.global_ranking``)
SYNTHETIC_IMPORTANCES = ("magnitude", "taylor", "bn_scale")


def synthetic_channel_scores(space: SearchSpace, *, seed: int = 0) -> ChannelScores:
    """Per-channel importance for a space without a model, as the torch side provides it for a
    real one: fixed random scores per channel, one scale per group (so a global ranking
    prunes groups unevenly) and per criterion, each group's normalised to mean 1 as
    Torch-Pruning's ``normalizer="mean"`` does; a criterion it does not know is refused."""

    def scores(kind: str) -> list[np.ndarray]:
        if kind not in SYNTHETIC_IMPORTANCES:
            raise ValueError(f"unknown importance {kind!r}")
        rng = np.random.default_rng([seed, SYNTHETIC_IMPORTANCES.index(kind)])
        out = []
        for group in space.groups:
            raw = rng.gamma(2.0, 1.0, size=group.size) * rng.uniform(0.2, 2.0)
            out.append(raw / raw.mean())
        return out

    return scores


def all_candidates(space: SearchSpace) -> np.ndarray:
    """Every candidate of a tiny space, shape (n_levels ** n_groups, n_groups), for brute force."""
    count = space.n_levels ** space.n_groups
    if count > MAX_ENUMERATED:
        raise ValueError(f"space has {count} candidates, more than the {MAX_ENUMERATED} brute force allows")
    grid = itertools.product(range(space.n_levels), repeat=space.n_groups)
    return np.array(list(grid), dtype=np.int64).reshape(count, space.n_groups)


def _linear_knapsack(problem: Problem) -> tuple[np.ndarray, int]:
    """Integer per-(group, level) costs and capacity of the problem's one linear budget.

    Both are divided by their greatest common divisor so the table stays small.
    """
    bounded = [r for r in ("flops", "params") if r in problem.constraints.limits]
    if len(bounded) != 1:
        raise ValueError(f"exact_optimum needs exactly one FLOPs or params budget, got {bounded}")
    resource = bounded[0]
    cost = problem.space.costs[resource]
    if np.any(cost.quadratic != 0) or np.any(cost.linear < 0):
        raise ValueError(f"exact_optimum needs a {resource} cost that is linear with non-negative prices")
    kept = np.array([g.kept for g in problem.space.groups], dtype=np.int64)
    prices = cost.linear[:, None] * kept
    capacity = int(math.floor(problem.constraints.limits[resource])) - int(cost.constant)
    divisor = math.gcd(*[int(p) for p in prices.ravel()], max(capacity, 0))
    if divisor > 1:
        prices, capacity = prices // divisor, capacity // divisor
    return prices, capacity


def exact_optimum(problem: Problem, quality: SeparableQuality) -> tuple[np.ndarray, float]:
    """The best candidate and its quality under one linear budget, by dynamic programming.

    A multiple-choice knapsack: groups are visited in turn, keeping for every spent cost
    the best quality so far and the level that achieved it. Exact, unlike the greedy rule,
    so tests can hold searchers to within 1% of the true optimum.
    """
    prices, capacity = _linear_knapsack(problem)
    if capacity < 0:
        raise ValueError("the budget is below the unprunable constant cost; no candidate is feasible")
    n_groups, n_levels = prices.shape
    if n_groups * (capacity + 1) > MAX_DP_CELLS:
        raise ValueError(f"budget of {capacity} cost units is too large for the exact table; shrink the space")
    best = np.full(capacity + 1, -np.inf)  # best[c]: top quality spending exactly c
    best[0] = 0.0
    choice = np.zeros((n_groups, capacity + 1), dtype=np.int16)
    for g in range(n_groups):
        new = np.full(capacity + 1, -np.inf)
        for level in range(n_levels):
            price = int(prices[g, level])
            if price > capacity:
                continue
            shifted = np.full(capacity + 1, -np.inf)
            shifted[price:] = best[: capacity + 1 - price] + quality.table[g, level]
            better = shifted > new
            new[better] = shifted[better]
            choice[g, better] = level
        best = new
    spent = int(np.argmax(best))
    if not np.isfinite(best[spent]):
        raise ValueError("no candidate meets the budget")
    levels = np.zeros(n_groups, dtype=np.int64)
    for g in range(n_groups - 1, -1, -1):
        levels[g] = choice[g, spent]
        spent -= int(prices[g, levels[g]])
    return levels, float(quality(levels))


def greedy_allocation(problem: Problem, quality: SeparableQuality) -> np.ndarray:
    """Start from the sparsest candidate and give back the level with the best gain per cost.

    For a separable concave quality under a linear budget this is the classic optimal
    rule up to discreteness (the last step that does not fit); on quadratic costs it is a
    reasonable heuristic. Cost is summed over bounded resources, each relative to its limit.
    """
    space = problem.space
    limits = problem.constraints.limits
    current = space.sparsest_candidate()
    groups = np.arange(space.n_groups)
    while True:
        denser = np.repeat(current[None, :], space.n_groups, axis=0)
        denser[groups, groups] = np.maximum(current - 1, 0)
        movable = (current > 0) & problem.feasible(denser)
        if not movable.any():
            return current
        gain = quality.table[groups, denser[groups, groups]] - quality.table[groups, current]
        extra = np.zeros(space.n_groups)
        for resource in ("flops", "params"):
            if resource in limits:
                extra += (space.cost(resource, denser) - space.cost(resource, current)) / limits[resource]
        rate = np.where(extra > 0, gain / np.where(extra > 0, extra, 1.0), np.inf)
        g = int(np.argmax(np.where(movable, rate, -np.inf)))
        current = denser[g]
