"""Build a :class:`SearchSpace` from a model: its groups, levels and exact cost model.

For every layer with parameters we work out which group governs its input channels and
which its output channels (from the dependency graph), then let its kind
(:mod:`autoprune.space.layer_kinds`) write its weight count and MACs as products of
those two channel counts. Layers whose size their kind cannot express exactly are
refused with a clear message rather than mispriced, and any other failure is refused in
one sentence naming the layer it happened in (:mod:`autoprune.space.locate`).
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.counting import layer_positions
from autoprune.space.graph import TracedGroups, group_members, trace_groups
from autoprune.space.layer_kinds import PricedLayer, kind_of
from autoprune.space.levels import LevelGrid
from autoprune.space.locate import LayerLocator, describe
from autoprune.space.search_space import Group, SearchSpace


#: a layer's input and output channel counts in terms of the groups' kept counts
#: (None: the layer's own full count, no group prunes that side)
Coupling = tuple["LinearCount | None", "LinearCount | None"]


def build_search_space(
    model: nn.Module, example_input: torch.Tensor, *, grid: LevelGrid, never_prune: list[str]
) -> SearchSpace:
    """Analyse ``model`` at ``example_input`` (batch of 1) and return its search space."""
    return analyse(model, example_input, grid=grid, never_prune=never_prune)[0]


def analyse(
    model: nn.Module, example_input: torch.Tensor, *, grid: LevelGrid, never_prune: list[str]
) -> tuple[SearchSpace, dict[str, Coupling]]:
    """The search space, and how each named layer's channels follow the groups."""
    if example_input.shape[0] != 1:
        example_input = example_input[:1]
    try:
        positions = layer_positions(model, example_input)
    except Exception as exc:  # the model does not run at its example input
        raise _forward_failure(model, example_input, exc) from None
    traced = trace_groups(model, example_input, never_prune=never_prune)
    if not traced.groups:
        raise UserError("the model has no prunable channels (every layer is excluded or has a single channel).")
    groups = []
    for name in traced.groups:
        members = tuple(traced.module_names[m] for m, _, _ in group_members(traced, name))
        size = len(traced.groups[name][0].idxs)
        groups.append(Group(name=name, size=size, kept=grid.kept(size), members=members))
    counts_in, counts_out = _channel_counts(traced, groups)
    flops = QuadraticCost(n_groups=len(groups))
    params = QuadraticCost(n_groups=len(groups))
    couplings: dict[str, Coupling] = {}
    for name, module in model.named_modules():
        layer = PricedLayer(name=name, module=module, count_in=counts_in.get(module), count_out=counts_out.get(module),
                            positions=positions.get(name, 0))
        try:
            kind_of(module).price(layer, flops=flops, params=params)
        except UserError:
            raise
        except Exception as exc:  # a layer its kind does not describe after all
            raise UserError(f"autoprune cannot price layer {describe(model, name)} ({type(exc).__name__}: {exc}); "
                            "that layer kind is not supported yet, so use another model.") from None
        couplings[name] = (layer.count_in, layer.count_out)
    return SearchSpace(groups=groups, grid=grid, flops=flops, params=params), couplings


def _channel_counts(traced: TracedGroups, groups: list[Group]) -> tuple[dict, dict]:
    """Input and output channel counts of each governed layer as :class:`LinearCount`s."""
    counts_in: dict[nn.Module, LinearCount] = {}
    counts_out: dict[nn.Module, LinearCount] = {}
    for index, group in enumerate(groups):
        for module, prunes_out, governed in group_members(traced, group.name):
            if governed % group.size:
                raise UserError(
                    f"layer {traced.module_names[module]!r} has {governed} channels tied to group "
                    f"{group.name!r} of {group.size}; autoprune cannot price that coupling, so add "
                    "the layer to never_prune."
                )
            target = counts_out if prunes_out else counts_in
            count = target.setdefault(module, LinearCount())
            count.add(index, governed // group.size)
            count.constant -= governed  # the governed channels leave the fixed part
    return counts_in, counts_out


def _forward_failure(model: nn.Module, example_input: torch.Tensor, exc: Exception) -> UserError:
    """The refusal for a model that fails when run at its example input, naming the layer:
    the forward pass is run again under a :class:`LayerLocator`."""
    with LayerLocator(model=model) as locator:
        try:
            with torch.no_grad():
                model.eval()(example_input)
        except Exception as again:
            exc = again
    place = locator.layer_of(exc)
    where = f" in layer {describe(model, place[0])}" if place else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UserError(f"the model fails{where} when run on one input of shape {tuple(example_input.shape)} "
                     f"({type(exc).__name__}: {message}); check that the model takes the task's input.")
