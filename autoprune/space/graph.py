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

from autoprune.errors import UserError
from autoprune.space.layer_kinds import root_types, tp_pruners
from autoprune.space.locate import LayerLocator, describe


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
    try:
        graph = _build_graph(model, example_input)
    except Exception as exc:  # an architecture Torch-Pruning cannot trace: say where
        raise _untraceable(model, example_input, exc) from None
    groups: dict[str, tp.Group] = {}
    try:
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=root_types()):
            root = group[0].dep.target.module
            name = module_names.get(root)
            if name is None or len(group[0].idxs) < 2:
                continue
            groups[name] = group
    except Exception as exc:
        raise _ungroupable(graph, module_names, ignored, exc) from None
    return TracedGroups(graph=graph, groups=groups, module_names=module_names)


def _build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` traced at ``example_input``. The input
    goes in a tuple: given a bare tensor, Torch-Pruning first calls the model on the
    tensor unpacked along its batch dimension."""
    return tp.DependencyGraph().build_dependency(model, example_inputs=(example_input,), verbose=False,
                                                 customized_pruners=tp_pruners(model))


def _untraceable(model: nn.Module, example_input: torch.Tensor, exc: Exception) -> UserError:
    """The refusal for a model whose dependency graph cannot be built: the trace is run
    again under a :class:`LayerLocator` to find the layer it fails in."""
    with LayerLocator(model=model) as locator:
        try:
            _build_graph(model, example_input)
            again: Exception = exc
        except Exception as failure:  # the same failure, now with the layers watched
            again = failure
    place = locator.layer_of(again)
    reason = _reason(again)
    if place is None:
        return UserError(f"Torch-Pruning cannot trace this model's channels ({reason}) and autoprune could not tell "
                         "in which layer; this architecture is not supported yet, so use another model.")
    layer, operation = place
    where = f"the operation {operation} in layer" if operation else "layer"
    return UserError(f"Torch-Pruning cannot trace the channels through {where} {describe(model, layer)} ({reason}); "
                     "that layer kind is not supported yet (never_prune does not help: the whole model is traced), "
                     "so use another model or rewrite that layer.")


def _ungroupable(graph: tp.DependencyGraph, module_names: dict[nn.Module, str], ignored: list[nn.Module],
                 exc: Exception) -> UserError:
    """The refusal for a graph whose groups cannot all be built: each root layer's group is
    built on its own to find the first that fails, the layer never_prune can leave out."""
    for module in graph.module2node:
        name = module_names.get(module)
        pruner = graph.get_pruner_of_module(module)
        if not name or module in ignored or not isinstance(module, root_types()) or pruner is None:
            continue
        try:
            channels = pruner.get_out_channels(module)
            if channels is not None:
                graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
        except Exception as failure:
            return UserError(f"the pruning group of layer {name!r} ({type(module).__name__}) cannot be built "
                             f"({_reason(failure)}); add {name!r} to never_prune in a --space file.")
    return UserError(f"Torch-Pruning cannot group this model's channels ({_reason(exc)}); this architecture is "
                     "not supported yet, so use another model.")


def _reason(exc: BaseException) -> str:
    """``Type: first line of the message`` of a library's exception, for one sentence."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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
