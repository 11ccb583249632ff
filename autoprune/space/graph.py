"""Prunable groups of a model, found by Torch-Pruning's dependency graph.

Torch-Pruning traces the model and couples every channel that must go together
(a residual sum ties the outputs of all convolutions feeding it, a BatchNorm follows its
convolution, a linear layer after a flatten follows the channels it reads). We name each
group after its root layer, whose output channels it prunes; the same model always gives
the same groups in the same order, which is what lets a level vector travel without the
model. Which layers may be roots, and how Torch-Pruning prunes kinds it does not know
itself, come from the layer kinds (:mod:`autoprune.space.layer_kinds`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from autoprune.space.layer_kinds import root_types, tp_pruners


@dataclass
class TracedGroups:
    """The dependency graph of one model instance and its groups, keyed by root layer name."""

    graph: tp.DependencyGraph
    groups: dict[str, tp.Group]
    module_names: dict[nn.Module, str]


def output_layer_name(model: nn.Module, example_input: torch.Tensor) -> str:
    """Name of the last layer run in a forward pass that could root a group (a convolution
    or linear layer): the classifier, whose outputs (the classes) are never pruned."""
    order: list[str] = []
    roots = root_types()
    hooks = [
        module.register_forward_hook(lambda *_a, _n=name: order.append(_n))
        for name, module in model.named_modules()
        if isinstance(module, roots)
    ]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("the model has no convolution or linear layer to prune")
    return order[-1]


def matches(name: str, pattern: str) -> bool:
    """Whether ``never_prune`` ``pattern`` covers the layer ``name``: a glob over layer names,
    where naming a container (``stem``) covers the layers inside it (``stem.0``)."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"{pattern}.*")


def unmatched_patterns(model: nn.Module, patterns: list[str]) -> list[str]:
    """The ``never_prune`` patterns that name no layer of ``model``: a mistyped name would
    otherwise protect nothing, silently."""
    names = [name for name, _ in model.named_modules() if name]
    return [p for p in patterns if not any(matches(name, p) for name in names)]


def trace_groups(model: nn.Module, example_input: torch.Tensor, *, never_prune: list[str]) -> TracedGroups:
    """Build the dependency graph of ``model`` and collect its prunable groups.

    ``never_prune`` holds glob patterns of layer names whose outputs are kept whole (the
    classifier is always among them).
    """
    module_names = {module: name for name, module in model.named_modules()}
    patterns = list(never_prune) + [output_layer_name(model, example_input)]
    ignored = [m for m, n in module_names.items() if n and any(matches(n, p) for p in patterns)]
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False,
                                                  customized_pruners=tp_pruners(model))
    groups: dict[str, tp.Group] = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=root_types()):
        root = group[0].dep.target.module
        name = module_names.get(root)
        if name is None or len(group[0].idxs) < 2:
            continue
        groups[name] = group
    return TracedGroups(graph=graph, groups=groups, module_names=module_names)


def group_members(traced: TracedGroups, name: str) -> list[tuple[nn.Module, bool, int]]:
    """(layer, prunes_outputs, number of that layer's channels governed) for each layer of a group.

    Dependencies on Torch-Pruning's internal operators (sums, reshapes) carry no
    parameters and are skipped. A layer whose inputs and outputs are the same channels
    (BatchNorm, depthwise convolution) counts as pruning outputs.
    """
    members = []
    for dep, idxs in traced.groups[name]:
        module = dep.target.module
        if module not in traced.module_names:
            continue
        prunes_out = traced.graph.is_out_channel_pruning_fn(dep.handler)
        members.append((module, bool(prunes_out), len(idxs)))
    return members
