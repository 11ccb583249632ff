"""Build a :class:`SearchSpace` from a model: its groups, levels and exact cost model.

For every layer with parameters we work out which group governs its input channels and
which its output channels (from the dependency graph), then let its kind
(:mod:`autoprune.space.layer_kinds`) write its weight count and MACs as products of
those two channel counts. Layers whose size their kind cannot express exactly are
refused with a clear message rather than mispriced, and any other failure is refused in
one sentence naming the layer it happened in (:mod:`autoprune.space.locate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.counting import layer_positions, uncounted_macs
from autoprune.space.graph import TracedGroups, failure_reason, group_members, trace_groups
from autoprune.space.layer_kinds import CannotPrice, PricedLayer, kind_of, priced_modules
from autoprune.space.levels import LevelGrid
from autoprune.space.locate import LayerLocator, describe
from autoprune.space.search_space import Group, SearchSpace
from autoprune.space.verify import check_prices


#: a layer's input and output channel counts in terms of the groups' kept counts
#: (None: the layer's own full count, no group prunes that side)
Coupling = tuple["LinearCount | None", "LinearCount | None"]


def build_search_space(
    model: nn.Module, example_input: torch.Tensor, *, grid: LevelGrid, never_prune: list[str]
) -> SearchSpace:
    """Analyse ``model`` at ``example_input`` (batch of 1) and return its search space."""
    return analyse(model, example_input, grid=grid, never_prune=never_prune)[0]


def analyse(
    model: nn.Module, example_input: torch.Tensor, *, grid: LevelGrid, never_prune: list[str], verify: bool = True
) -> tuple[SearchSpace, dict[str, Coupling]]:
    """The search space, and how each named layer's channels follow the groups.

    Everything the analysis cannot prune or price is collected and refused at once, in
    one sentence with the ``never_prune`` entries (group roots) that leave it whole. With
    ``verify``, the prices are then held to torch's own count (:mod:`autoprune.space.verify`)."""
    if example_input.shape[0] != 1:
        example_input = example_input[:1]
    try:
        positions = layer_positions(model, example_input)
    except Exception as exc:  # the model does not run at its example input
        raise _forward_failure(model, example_input, exc) from None
    traced = trace_groups(model, example_input, never_prune=never_prune)
    refusals = Refusals(model=model)
    for root, reason in traced.refused.items():
        refusals.add(root, f"the group of layer {describe(model, root)}: {reason}")
    groups = []
    for name in traced.groups:
        members = tuple(traced.module_names[m] for m, _, _ in group_members(traced, name))
        size = len(traced.groups[name][0].idxs)
        blocks = traced.channel_groups.get(name, 1)
        unit = traced.units.get(name, 1)
        kept = tuple(blocks * k for k in grid.kept(size // blocks))
        if unit > 1:  # the grid's channel counts to the nearest whole heads, at least one
            kept = tuple(max(unit, int(round(k / unit)) * unit) for k in kept)
        groups.append(Group(name=name, size=size, kept=kept, members=members, channel_groups=blocks, unit=unit))
    if not groups and not refusals:
        raise UserError("the model has no prunable channels (every layer is excluded or has a single channel).")
    counts_in, counts_out = _channel_counts(traced, groups, refusals)
    denominator = math.lcm(1, *(kind_of(m).cost_denominator(m) for m in model.modules()))
    flops = QuadraticCost(n_groups=len(groups), denominator=denominator)
    params = QuadraticCost(n_groups=len(groups), denominator=denominator)
    loose = _price_loose_parameters(traced, groups, params)
    couplings: dict[str, Coupling] = {}
    for name, module in priced_modules(model):  # an opaque layer prices what is inside it
        layer = PricedLayer(name=name, module=module, count_in=counts_in.get(module), count_out=counts_out.get(module),
                            positions=positions.get(name, 0), priced_elsewhere=loose)
        try:
            kind_of(module).price(layer, flops=flops, params=params)
        except CannotPrice as exc:
            refusals.add_layer(layer, groups, exc.reason)
        except UserError:
            raise
        except Exception as exc:  # a layer its kind does not describe after all
            refusals.add_layer(layer, groups, f"autoprune cannot price it ({failure_reason(exc)})")
        couplings[name] = (layer.count_in, layer.count_out)
    refusals.raise_if_any()
    for macs in uncounted_macs(model, example_input, positions).values():  # unpruned layers no kind counts
        flops.add_count(LinearCount(constant=1), macs)
    space = SearchSpace(groups=groups, grid=grid, flops=flops, params=params)
    if verify:
        check_prices(model, example_input, space, never_prune=never_prune)
    return space, couplings


@dataclass
class Refusals:
    """What the analysis cannot prune or price, gathered over the whole model so that one
    refusal names all of it, with the group roots a ``never_prune`` list must hold."""

    model: nn.Module
    reasons: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def add(self, root: str, reason: str) -> None:
        self.reasons.append(reason)
        if root not in self.roots:
            self.roots.append(root)

    def add_layer(self, layer: PricedLayer, groups: list[Group], reason: str) -> None:
        """A layer that cannot be priced: the groups pruning its channels are the ones to leave whole."""
        indices = sorted({g for count in (layer.count_in, layer.count_out) if count for g in count.terms})
        names = [groups[i].name for i in indices]
        where = f" (in group{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)})" if names else ""
        self.reasons.append(f"layer {describe(self.model, layer.name)}{where}: {reason}")
        for name in names:
            if name not in self.roots:
                self.roots.append(name)

    def raise_if_any(self) -> None:
        if not self.reasons:
            return
        shown = "; ".join(self.reasons[:12]) + (f"; and {len(self.reasons) - 12} more" if len(self.reasons) > 12 else "")
        order = {name: i for i, (name, _) in enumerate(self.model.named_modules())}
        entries = ", ".join(_yaml_name(r) for r in sorted(self.roots, key=lambda r: order.get(r, len(order))))
        raise UserError(f"autoprune cannot prune {len(self.reasons)} part{'s' if len(self.reasons) > 1 else ''} of "
                        f"this model ({shown}); to keep them whole, put this line in a --space file: "
                        f"never_prune: [{entries}]")


def _yaml_name(name: str) -> str:
    """A layer name as a YAML flow-sequence item (quoted where YAML would read it otherwise)."""
    return name if name.replace(".", "").replace("_", "").isalnum() and not name[0].isdigit() else f"'{name}'"


def _price_loose_parameters(traced: TracedGroups, groups: list[Group], params: QuadraticCost) -> frozenset[int]:
    """Price the parameters groups prune outside any layer (a layer scale, a class token)
    with their groups: ``numel / channels`` per kept channel along the pruned dimension.
    Returns their ids, which their owners' kinds then leave out."""
    priced: dict[int, LinearCount] = {}
    shapes: dict[int, tuple[int, int]] = {}
    for index, group in enumerate(groups):
        for _name, parameter, dim, governed in traced.loose_parameters(group.name):
            count = priced.setdefault(id(parameter), LinearCount(constant=parameter.shape[dim]))
            count.add(index, governed // group.size)
            count.constant -= governed
            shapes[id(parameter)] = (parameter.numel(), parameter.shape[dim])
    for key, count in priced.items():
        numel, channels = shapes[key]
        params.add_count(count, numel // channels)
    return frozenset(priced)


def _channel_counts(traced: TracedGroups, groups: list[Group], refusals: Refusals) -> tuple[dict, dict]:
    """Input and output channel counts of each governed layer as :class:`LinearCount`s."""
    counts_in: dict[nn.Module, LinearCount] = {}
    counts_out: dict[nn.Module, LinearCount] = {}
    for index, group in enumerate(groups):
        for module, prunes_out, governed in group_members(traced, group.name):
            if governed % group.size:
                refusals.add(group.name, f"layer {describe(refusals.model, traced.module_names[module])} "
                                         f"has {governed} channels tied to group {group.name!r} of {group.size}, "
                                         "a coupling autoprune cannot price")
                continue
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
