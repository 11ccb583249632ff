"""Pruned weights per group and level, computed once: assembling a candidate only copies.

Týr-the-Pruner (Li et al., 2025) builds a *supernet*: every layer pruned at every
sparsity of its window once, so that a candidate of the search is put together by
picking one pruned copy per layer instead of pruning again. For structured pruning of
coupled channels the same holds per tensor dimension: each dimension of each parameter
or buffer is governed by at most one group (a convolution's output channels by its own
group, its input channels by the group feeding it), and which entries survive along
that dimension depends on that group's level only. So the database stores, once,

- the kept channel indices of every group at every level of the grid (importance is
  scored on the dense weights, exactly as :func:`autoprune.space.materialize.materialize`
  does),
- for every tensor dimension, the group governing it and the positions it keeps at
  each level (found by pruning an *index-coded* copy of the model, whose entries hold
  their own flat index, with Torch-Pruning: expansions such as a flatten before a
  linear layer come out right without knowing about them),
- lazily, each tensor sliced along its first governed dimension per level (the pruned
  weights), so that assembly is one more index copy per tensor.

Assembly needs no dependency graph and no importance scoring: a deep copy of the module
structure without its tensors, the sliced tensors put in, and the shape attributes of
every layer set by its kind (:meth:`autoprune.space.layer_kinds.LayerKind.fix_shape`).
:meth:`LevelDatabase.build` checks the result against :func:`materialize` on a few
candidates and refuses a model it cannot assemble exactly (a layer kind that cannot be
reshaped): the evaluator then materialises from scratch as before.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autoprune.space.graph import trace_groups
from autoprune.space.layer_kinds import UnsupportedModel, kind_of
from autoprune.space.materialize import Importance, channel_order, default_importance, materialize, prune_groups
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

#: candidates checked against materialize when a database is built
VERIFY_CANDIDATES = 3


@dataclass(frozen=True)
class _Axis:
    """One governed dimension of one tensor: which group, and the positions kept per level."""

    dim: int
    group: int
    positions: tuple[torch.Tensor, ...]  # one index tensor per level


class LevelDatabase:
    """Kept indices and pruned tensors of every group at every level of a dense model."""

    def __init__(self, dense: nn.Module, space: SearchSpace, keep_indices: list[list[list[int]]],
                 axes: dict[str, list[_Axis]]) -> None:
        self.dense = dense
        self.space = space
        self._keep_indices = keep_indices  # [group][level] -> sorted kept channel indices
        self._axes = axes
        self._tensors = dict(_named_tensors(dense))
        self._sliced: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def build(cls, dense: nn.Module, space: SearchSpace, example_input: torch.Tensor, *,
              never_prune: list[str], importance: Importance | None = None) -> "LevelDatabase":
        """Score channels once, probe which positions each level keeps, and verify.

        Costs ``n_groups + n_levels`` prunings of the model, once. Raises
        :class:`UnsupportedModel` when assembly would not equal materialisation."""
        dense = dense.eval()
        keep_indices = _keep_indices_per_level(dense, space, example_input, never_prune, importance)
        axes = _probe_axes(dense, space, keep_indices, example_input, never_prune)
        database = cls(dense, space, keep_indices, axes)
        try:
            database._verify(example_input, never_prune, importance)
        except RuntimeError as exc:  # e.g. a tensor shared by two layers left unassigned
            raise UnsupportedModel(f"the assembled model does not run: {exc}") from exc
        return database

    def keep_indices(self, levels: np.ndarray) -> dict[str, list[int]]:
        """Kept channel indices of every group pruned at ``levels`` (as materialize returns them)."""
        counts = self.space.kept_counts(levels)
        return {g.name: list(self._keep_indices[i][int(level)])
                for i, (g, level, k) in enumerate(zip(self.space.groups, levels, counts)) if k < g.size}

    def assemble(self, levels: np.ndarray) -> tuple[nn.Module, dict[str, list[int]]]:
        """A pruned copy of the dense model at ``levels``, and its kept indices."""
        levels = self.space.check(levels)
        placeholders = {id(t): _placeholder(t) for t in self._tensors.values()}
        model = copy.deepcopy(self.dense, memo=placeholders)  # structure only: tensors are set below
        with torch.no_grad():
            for name, _ in _named_tensors(model):
                _assign(model, name, self._pruned(name, levels))
        _fix_shape_attributes(model)
        return model.eval(), self.keep_indices(levels)

    def _pruned(self, name: str, levels: np.ndarray) -> torch.Tensor:
        axes = self._axes.get(name, [])
        if not axes:
            return self._tensors[name].clone()
        first, rest = axes[0], axes[1:]
        level = int(levels[first.group])
        key = (name, level)
        sliced = self._sliced.get(key)
        if sliced is None:
            sliced = self._tensors[name].index_select(first.dim, first.positions[level])
            self._sliced[key] = sliced
        for axis in rest:
            sliced = sliced.index_select(axis.dim, axis.positions[int(levels[axis.group])])
        return sliced.clone() if not rest else sliced

    def _verify(self, example_input: torch.Tensor, never_prune: list[str], importance: Importance | None) -> None:
        rng = np.random.default_rng(0)
        candidates = [self.space.sparsest_candidate()]
        candidates += [rng.integers(0, self.space.n_levels, self.space.n_groups) for _ in range(VERIFY_CANDIDATES - 1)]
        for levels in candidates:
            expected, expected_keep = materialize(self.dense, self.space, levels, example_input,
                                                  never_prune=never_prune, importance=importance)
            got, got_keep = self.assemble(levels)
            if got_keep != expected_keep:
                raise UnsupportedModel("assembled kept indices differ from materialize's")
            want = dict(_named_tensors(expected))
            have = dict(_named_tensors(got))
            if want.keys() != have.keys() or any(not torch.equal(want[k], have[k]) for k in want):
                raise UnsupportedModel("assembled tensors differ from materialize's")
            with torch.no_grad():
                if not torch.equal(expected(example_input), got(example_input)):
                    raise UnsupportedModel("the assembled model computes differently from the materialised one")


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers by qualified name (what a state dict holds, tied tensors once)."""
    return list(model.named_parameters()) + list(model.named_buffers())


def _placeholder(tensor: torch.Tensor) -> torch.Tensor:
    empty = torch.empty(0, dtype=tensor.dtype)
    return nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty


def _assign(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=module._parameters[attr].requires_grad)
    else:
        module._buffers[attr] = value


def _fix_shape_attributes(model: nn.Module) -> None:
    """Set the attributes that describe each layer's shape from its (pruned) tensors."""
    for name, module in model.named_modules():
        kind_of(module).fix_shape(name, module)


def _keep_indices_per_level(dense: nn.Module, space: SearchSpace, example_input: torch.Tensor,
                            never_prune: list[str], importance: Importance | None) -> list[list[list[int]]]:
    """Channel order of every group by importance on the dense weights, cut at each level."""
    model = copy.deepcopy(dense).eval()
    traced = trace_groups(model, example_input[:1], never_prune=never_prune)
    if list(traced.groups) != space.group_names:
        raise UnsupportedModel("the model's prunable groups differ from the search space's")
    score = importance or default_importance()
    table = []
    for group, (name, tp_group) in zip(space.groups, traced.groups.items()):
        order = channel_order(name, tp_group, score, channel_groups=group.channel_groups, unit=group.unit)
        table.append([sorted(order[:k]) for k in group.kept])
    return table


def _index_coded(dense: nn.Module) -> nn.Module:
    """A float64 copy whose every entry holds its own flat index within its tensor."""
    coded = copy.deepcopy(dense).double().eval()
    with torch.no_grad():
        for _, tensor in _named_tensors(coded):
            if tensor.is_floating_point():
                tensor.copy_(torch.arange(tensor.numel(), dtype=torch.float64).reshape(tensor.shape))
    return coded


def _prune_coded(dense: nn.Module, keep: dict[str, list[int]], example_input: torch.Tensor,
                 never_prune: list[str]) -> dict[str, torch.Tensor]:
    coded = _index_coded(dense)
    x = example_input[:1]
    x = x.double() if x.is_floating_point() else x  # token ids stay ids
    traced = trace_groups(coded, x, never_prune=never_prune)
    prune_groups(coded, traced.groups, keep)
    return dict(_named_tensors(coded))


def _probe_axes(dense: nn.Module, space: SearchSpace, keep_indices: list[list[list[int]]],
                example_input: torch.Tensor, never_prune: list[str]) -> dict[str, list[_Axis]]:
    """Which group governs each tensor dimension, and which positions each level keeps there."""
    shapes = {name: tuple(t.shape) for name, t in _named_tensors(dense)}
    governing: dict[tuple[str, int], int] = {}
    for g, group in enumerate(space.groups):  # prune one group alone to its sparsest level
        sparsest = keep_indices[g][-1]
        if len(sparsest) == group.size:
            continue
        pruned = _prune_coded(dense, {group.name: sparsest}, example_input, never_prune)
        for name, tensor in pruned.items():
            for dim, (before, after) in enumerate(zip(shapes[name], tensor.shape)):
                if before != after:
                    if (name, dim) in governing:
                        raise UnsupportedModel(f"dimension {dim} of {name!r} is pruned by two groups")
                    governing[(name, dim)] = g
    positions: dict[tuple[str, int], list[torch.Tensor]] = {key: [] for key in governing}
    for level in range(space.n_levels):  # every group at one level at once: dimensions are separable
        keep = {group.name: keep_indices[g][level] for g, group in enumerate(space.groups)
                if len(keep_indices[g][level]) < group.size}
        pruned = _prune_coded(dense, keep, example_input, never_prune) if keep else None
        for (name, dim), _ in governing.items():
            if pruned is None or pruned[name].shape[dim] == shapes[name][dim]:
                positions[(name, dim)].append(torch.arange(shapes[name][dim]))
                continue
            line = pruned[name].movedim(dim, 0).reshape(pruned[name].shape[dim], -1)[:, 0]
            flat = line.to(torch.int64).numpy()
            coordinate = np.unravel_index(flat, shapes[name])[dim]
            positions[(name, dim)].append(torch.as_tensor(coordinate, dtype=torch.int64))
    axes: dict[str, list[_Axis]] = {}
    for (name, dim), g in sorted(governing.items()):
        axes.setdefault(name, []).append(_Axis(dim=dim, group=g, positions=tuple(positions[(name, dim)])))
    return axes
