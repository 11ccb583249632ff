"""Turn a candidate into a physically smaller model (channels removed, not masked).

Which channels go is decided by an importance criterion computed on the dense weights
(L2 magnitude by default, any Torch-Pruning importance can be passed). The kept channel
indices are returned too: an exported model stores them, so that
:func:`prune_to_indices` can rebuild the same architecture in a fresh process from an
untrained model and load the weights into it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from autoprune.space.graph import settle_after_pruning, trace_groups
from autoprune.space.search_space import SearchSpace

#: maps a Torch-Pruning group to one score per channel of its root layer (higher = keep)
Importance = Callable[[tp.Group], torch.Tensor]


def default_importance() -> Importance:
    """L2 norm of each channel's weights over the whole group (Torch-Pruning's group magnitude)."""
    return tp.importance.GroupMagnitudeImportance(p=2)


def materialize(
    dense: nn.Module,
    space: SearchSpace,
    levels: np.ndarray,
    example_input: torch.Tensor,
    *,
    never_prune: list[str],
    importance: Importance | None = None,
) -> tuple[nn.Module, dict[str, list[int]]]:
    """A pruned copy of ``dense`` with the kept counts of ``levels``, and the kept indices.

    ``dense`` is not modified.
    """
    kept = dict(zip(space.group_names, (int(k) for k in space.kept_counts(levels))))
    groups = {g.name: g for g in space.groups}
    score = importance or default_importance()
    model = copy.deepcopy(dense).eval()
    traced = trace_groups(model, example_input[:1], never_prune=never_prune)
    _check_same_groups(space.group_names, traced.groups)
    keep_indices = {name: sorted(channel_order(name, group, score, channel_groups=groups[name].channel_groups,
                                               unit=groups[name].unit)[: kept[name]])
                    for name, group in traced.groups.items() if kept[name] < len(group[0].idxs)}
    prune_groups(model, traced.groups, keep_indices)
    return model, keep_indices


def channel_order(name: str, group: tp.Group, score: Importance, *, channel_groups: int = 1,
                  unit: int = 1) -> list[int]:
    """The group's channels from most to least important (ties keep index order).

    Where the channels fall into ``channel_groups`` equal blocks (a grouped convolution),
    positions within a block are ranked by their mean score over the blocks, as
    Torch-Pruning does, and each position brings its channel from every block: any prefix
    whose length is a multiple of ``channel_groups`` keeps the same positions in every block.
    Where ``unit`` consecutive channels go together (an attention head), units are ranked by
    their mean score, as Torch-Pruning ranks heads, and each brings all its channels: any
    prefix whose length is a multiple of ``unit`` keeps whole units."""
    size = len(group[0].idxs)
    with torch.no_grad():
        scores = score(group)
    if scores is None or len(scores) != size:
        raise ValueError(f"importance gave no usable scores for group {name!r}")
    if unit > 1:
        units = torch.argsort(scores.float().view(size // unit, unit).mean(dim=1), descending=True, stable=True)
        return [int(u) * unit + j for u in units for j in range(unit)]
    if channel_groups == 1:
        return [int(i) for i in torch.argsort(scores.float(), descending=True, stable=True)]
    block = size // channel_groups
    positions = torch.argsort(scores.float().view(channel_groups, block).mean(dim=0), descending=True, stable=True)
    return [int(p) + b * block for p in positions for b in range(channel_groups)]


def prune_to_indices(
    model: nn.Module, keep_indices: Mapping[str, list[int]], example_input: torch.Tensor, *, never_prune: list[str]
) -> nn.Module:
    """Prune ``model`` in place so each named group keeps exactly the given channel indices."""
    traced = trace_groups(model.eval(), example_input[:1], never_prune=never_prune)
    unknown = sorted(set(keep_indices) - set(traced.groups))
    if unknown:
        raise ValueError(f"the model has no prunable groups named {unknown}")
    prune_groups(model, traced.groups, {k: list(v) for k, v in keep_indices.items()})
    return model


def prune_groups(model: nn.Module, groups: Mapping[str, tp.Group], keep_indices: Mapping[str, list[int]]) -> None:
    """Prune each named group of traced ``model`` down to the given channel indices, then let
    its layers settle what they keep of the new widths (:func:`settle_after_pruning`)."""
    for name, keep in keep_indices.items():
        group = groups[name]
        size = len(group[0].idxs)
        keep_set = set(keep)
        remove = [i for i in range(size) if i not in keep_set]
        if remove:
            group.prune(idxs=remove)
    settle_after_pruning(model)


def _check_same_groups(expected: list[str], found: Mapping[str, tp.Group]) -> None:
    if list(found) != list(expected):
        raise ValueError(
            "the model's prunable groups differ from the search space's; was the space built "
            f"for another model? expected {expected[:3]}..., found {list(found)[:3]}..."
        )
