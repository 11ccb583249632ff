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
import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import UserError
from autoprune.space.layer_kinds import kind_of, tp_pruners
from autoprune.space.locate import LayerLocator, describe
from autoprune.space.opaque import opaque_layers
from autoprune.space.reshapes import HiddenChannelSplits


@dataclass
class TracedGroups:
    """The dependency graph of one model instance and its groups, keyed by root layer name.

    ``refused`` maps the root of each group Torch-Pruning could not build, or whose
    channels cannot be split evenly into its layers' blocks or heads, to the reason; those
    groups are left out of ``groups``. ``channel_groups`` gives, per group, into how many
    equal blocks its channels fall (:meth:`LayerKind.channel_groups`: 1 for most), and
    ``units`` how many consecutive channels go together (attention heads)."""

    graph: tp.DependencyGraph
    groups: dict[str, tp.Group]
    module_names: dict[nn.Module, str]
    refused: dict[str, str] = field(default_factory=dict)
    channel_groups: dict[str, int] = field(default_factory=dict)
    #: per group, how many consecutive channels go together (:meth:`LayerKind.channel_unit`:
    #: an attention head's width; 1 for most)
    units: dict[str, int] = field(default_factory=dict)

    def loose_parameters(self, name: str) -> list[tuple[str, nn.Parameter, int, int]]:
        """(parameter name, parameter, pruned dimension, channels governed) of each parameter
        that group ``name`` prunes outside any layer Torch-Pruning knows (a layer scale, a
        class token, a position embedding)."""
        dims = {id(u.parameters): u.pruning_dim for u in self.graph.unwrapped_parameters}
        found = []
        for dep, idxs in self.groups[name]:
            target = dep.target.module
            if isinstance(target, nn.Parameter) and id(target) in dims:
                found.append((self.graph._param_to_name.get(target, "?"), target, dims[id(target)], len(idxs)))
        return found


@contextlib.contextmanager
def tracing_mode(model: nn.Module) -> Iterator[None]:
    """The model in training mode with its normalisations and dropout in eval mode, restored
    afterwards: what a forward pass in training mode runs (auxiliary heads, as in GoogLeNet
    and Inception v3, run only then), without batch statistics (one sample is traced) or
    random drops."""
    modes = {module: module.training for module in model.modules()}
    model.train()
    for module in model.modules():
        if isinstance(module, _EVAL_WHILE_TRACING):
            module.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


_EVAL_WHILE_TRACING = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                       nn.modules.dropout._DropoutNd)


def output_layer_names(model: nn.Module, example_input: torch.Tensor, *, train: bool = True) -> list[str]:
    """Names of the layers that could root a group (convolutions, linear layers) whose
    outputs are the model's outputs: the classifier, and auxiliary classifiers where a
    forward pass in training mode (:func:`tracing_mode`) returns them too. Their outputs
    (the classes) are never pruned. Where no output is a layer's own (a reshape or an
    activation follows), the last such layer run.

    Outputs are matched by identity (a weak reference beside the ``id``): matched by ``id``
    alone, a freed intermediate output whose address the model's output reused now and
    then named a convolution inside SqueezeNet as a classifier, so two analyses of one
    model found different groups."""
    order: list[str] = []
    made: dict[int, tuple[str, weakref.ref]] = {}  # by id, and the output itself while it lives
    def record(_module: nn.Module, _args: tuple, output: object, _n: str = "") -> None:
        order.append(_n)
        if isinstance(output, torch.Tensor):
            made[id(output)] = (_n, weakref.ref(output))

    hooks = [module.register_forward_hook(lambda m, a, o, _n=name: record(m, a, o, _n))
             for name, module in model.named_modules() if kind_of(module).root]
    try:
        with torch.no_grad(), (tracing_mode(model) if train else _eval(model)):
            output = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("the model has no convolution or linear layer to prune")
    found = [made[id(t)][0] for t in _tensors(output) if id(t) in made and made[id(t)][1]() is t]
    return list(dict.fromkeys(found)) or [order[-1]]


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _tensors(value: object) -> list[torch.Tensor]:
    """The tensors in a model's output (a tensor, tuples and named tuples, dicts)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


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
    classifiers are always among them). The model is traced in :func:`tracing_mode`, so
    that what a training step runs (auxiliary heads) is pruned consistently, or in eval
    mode where it fails in training mode; it is left in eval mode. Roots whose group cannot
    be built are recorded in ``refused``, not raised, so the analysis can name them all.
    """
    module_names = {module: name for name, module in model.named_modules()}
    try:  # in training mode, so that auxiliary heads are traced and pruned with what feeds them
        train = True
        outputs = output_layer_names(model, example_input, train=True)
    except Exception:  # noqa: BLE001  (a model that only runs in eval mode is traced in eval mode)
        train = False
        outputs = output_layer_names(model, example_input, train=False)
    patterns = list(never_prune) + outputs
    ignored = [m for m, n in module_names.items() if n and any(matches(n, p) for p in patterns)]
    try:
        graph, shuffles = _build_graph(model, example_input, train=train)
    except Exception as exc:  # an architecture Torch-Pruning cannot trace (MemoryError included): say where
        raise _untraceable(model, example_input, exc, train=train) from None
    finally:
        model.eval()
    traced = TracedGroups(graph=graph, groups={}, module_names=module_names)
    try:
        found = list(_all_groups(graph, ignored, order=list(module_names), shuffles=shuffles))
    except GroupTooLarge as exc:
        raise UserError(f"Torch-Pruning's channel analysis of this model grew past {exc} for one group (a product of "
                        "two activations, such as attention scores written out with reshapes, ties every channel to "
                        "every other); this architecture is not supported yet, so use another model.") from None
    for root, group, failure in found:
        name = module_names.get(root)
        if name is None:
            continue
        if isinstance(failure, ThroughShuffle):
            where = (describe(model, failure.layer) if failure.layer
                     else f"the model's own forward ({type(model).__name__})")
            traced.refused[name] = (f"its channels pass through the channel shuffle in {where}, which permutes them; "
                                    "Torch-Pruning cannot prune them consistently")
            continue
        if failure is not None:
            traced.refused[name] = f"its pruning group cannot be built ({failure_reason(failure)})"
            continue
        if len(group[0].idxs) < 2:
            continue
        blocks = _channel_blocks(group, module_names)
        if len(group[0].idxs) % blocks:
            traced.refused[name] = (f"its {len(group[0].idxs)} channels do not split evenly into the {blocks} "
                                    "blocks of the grouped layers it feeds")
            continue
        unit = _channel_unit(group, module_names)
        if isinstance(unit, str):
            traced.refused[name] = unit
            continue
        if unit > 1 and blocks > 1:
            traced.refused[name] = (f"its channels are both attention heads of {unit} and the {blocks} blocks of a "
                                    "grouped layer, which autoprune cannot prune together")
            continue
        traced.groups[name] = group
        traced.channel_groups[name] = blocks
        traced.units[name] = unit
    return traced


#: index entries one group may collect while Torch-Pruning builds it (a few hundred MB)
GROUP_INDEX_BUDGET = 2_000_000


class GroupTooLarge(Exception):
    """Torch-Pruning's walk for one group went past :data:`GROUP_INDEX_BUDGET` index entries."""


class _BoundedGroup(tp.dependency.group.Group):
    """A Torch-Pruning group that counts the channel indices added while it is built and
    stops the walk past the budget. A product of two activations (attention scores written
    out as ``q @ k.T`` beside reshapes, as in Swin) makes Torch-Pruning's index mapping
    multiply indices on every pass: building one group then took minutes and, at
    ImageNet sizes, all the machine's memory."""

    def __init__(self) -> None:
        super().__init__()
        self._added = 0

    def add_dep(self, dep: object, idxs: list) -> None:
        self._added += len(idxs)
        if self._added > GROUP_INDEX_BUDGET:
            raise GroupTooLarge(f"{GROUP_INDEX_BUDGET:,} channel indices")
        super().add_dep(dep, idxs)


@contextlib.contextmanager
def _bounded_groups() -> Iterator[None]:
    """Torch-Pruning builds groups with :class:`_BoundedGroup` inside this block (its graph
    module looks the class up by name when it builds a group; restored afterwards)."""
    module = tp.dependency.graph
    original = module.Group
    module.Group = _BoundedGroup
    try:
        yield
    finally:
        module.Group = original


class ThroughShuffle(Exception):
    """A group whose channels pass through a channel shuffle (:mod:`autoprune.space.reshapes`)
    in ``layer`` (``""``: the model's own forward)."""

    def __init__(self, layer: str) -> None:
        super().__init__(layer)
        self.layer = layer


def _all_groups(graph: tp.DependencyGraph, ignored: list[nn.Module], *, order: list[nn.Module],
                shuffles: dict[object, str]):
    """Torch-Pruning's ``get_all_groups`` one root at a time, so that a root whose group cannot
    be built is reported with its failure instead of ending the analysis:
    ``(root, group or None, exception or None)``. A walk past the index budget ends the
    analysis (:class:`GroupTooLarge`): every other root would take as long. A group reaching
    one of the channel shuffles hidden while tracing (``shuffles``: autograd node to layer)
    fails with :class:`ThroughShuffle`; its layers are not tried as roots again.

    Roots are tried in the model's own order (``order``, its ``named_modules``): the graph's
    node order comes from tracing and varied between builds of the same model, and with it
    which layer named a group, so a space and a later analysis of its model disagreed."""
    visited: set[nn.Module] = set()
    skip = set(ignored) | set(graph.IGNORED_LAYERS_IN_TRACING)
    traced = set(graph.module2node)
    for module in [m for m in order if m in traced]:
        if module in skip or module in visited or not kind_of(module).root:  # named kinds too (torchvision's)
            continue
        pruner = graph.get_pruner_of_module(module)
        try:
            channels = None if pruner is None else pruner.get_out_channels(module)
            if channels is None:
                continue
            with _bounded_groups():
                group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
        except GroupTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001  (reported per root)
            yield module, None, exc
            continue
        prunable = True
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                if dep.target.module in skip:
                    prunable = False
        shuffled = [shuffles[dep.target.grad_fn] for dep, _ in group if dep.target.grad_fn in shuffles]
        if prunable and shuffled:
            yield module, None, ThroughShuffle(shuffled[0])
        elif prunable:
            yield module, group, None


def _channel_blocks(group: tp.Group, module_names: dict[nn.Module, str]) -> int:
    """Into how many equal blocks the group's channels fall: the least common multiple of
    its layers' :meth:`LayerKind.channel_groups` (a grouped convolution's groups)."""
    blocks = 1
    for dep, _ in group:
        module = dep.target.module
        if module in module_names:
            blocks = math.lcm(blocks, kind_of(module).channel_groups(module))
    return blocks


def _channel_unit(group: tp.Group, module_names: dict[nn.Module, str]) -> int | str:
    """How many consecutive channels of the group go together (an attention head's width:
    :meth:`LayerKind.channel_unit`), or why the group cannot be pruned by such units: layers
    with different head widths, or head channels that are not the group's own channels in
    order (a concatenation in front of the attention would shift them)."""
    units: set[int] = set()
    size = len(group[0].idxs)
    for dep, idxs in group:
        module = dep.target.module
        if module not in module_names:
            continue
        unit = kind_of(module).channel_unit(module)
        if unit == 1:
            continue
        units.add(unit)
        if [int(i) for i in idxs] != list(range(size)):
            return (f"the heads of attention layer {module_names[module]!r} are not the group's channels in order, "
                    "which autoprune cannot prune by whole heads")
    if len(units) > 1:
        return f"attention layers with heads of {sorted(units)} channels share its channels"
    unit = units.pop() if units else 1
    if size % unit:
        return f"its {size} channels do not split into whole attention heads of {unit}"
    return unit


def settle_after_pruning(model: nn.Module) -> None:
    """Let every layer's kind set what the layer keeps of its children's widths
    (:meth:`LayerKind.after_pruning`) once Torch-Pruning pruned the model."""
    for module in model.modules():
        kind_of(module).after_pruning(module)


def _build_graph(model: nn.Module, example_input: torch.Tensor, *,
                 train: bool) -> tuple[tp.DependencyGraph, dict[object, str]]:
    """Torch-Pruning's dependency graph of ``model`` traced at ``example_input``, in
    :func:`tracing_mode` where ``train``, with channel shuffles hidden
    (:class:`HiddenChannelSplits`) and opaque layers run as one step (:func:`opaque_layers`);
    and the hidden shuffles' autograd nodes with their layers.
    The input goes in a tuple: given a bare tensor, Torch-Pruning first calls the model on
    the tensor unpacked along its batch dimension."""
    hidden = HiddenChannelSplits()

    def forward(module: nn.Module, inputs: tuple) -> object:  # Torch-Pruning sets eval mode before calling it
        hooks = hidden.watch(module)
        try:
            with tracing_mode(module) if train else _eval(module), opaque_layers(module), hidden:
                return module(*inputs)
        finally:
            for hook in hooks:
                hook.remove()

    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=(example_input,), forward_fn=forward,
                                                      verbose=False, customized_pruners=tp_pruners(model))
        return graph, hidden.layers
    finally:
        model.eval()


def _untraceable(model: nn.Module, example_input: torch.Tensor, exc: Exception, *, train: bool) -> UserError:
    """The refusal for a model whose dependency graph cannot be built: the trace is run
    again under a :class:`LayerLocator` to find the layer it fails in (not after running
    out of memory or recursion depth, which a second run would only repeat)."""
    if isinstance(exc, (MemoryError, RecursionError)):
        return UserError(f"Torch-Pruning ran out of {'memory' if isinstance(exc, MemoryError) else 'recursion depth'} "
                         f"tracing this model's channels at input shape {tuple(example_input.shape)}; this "
                         "architecture is not supported at that size, so use a smaller input or another model.")
    with LayerLocator(model=model) as locator:
        try:
            _build_graph(model, example_input, train=train)
            again: Exception = exc
        except Exception as failure:  # the same failure, now with the layers watched
            again = failure
    place = locator.layer_of(again)
    reason = failure_reason(again)
    if place is None:
        return UserError(f"Torch-Pruning cannot trace this model's channels ({reason}) and autoprune could not tell "
                         "in which layer; this architecture is not supported yet, so use another model.")
    layer, operation = place
    where = f"the operation {operation} in layer" if operation else "layer"
    return UserError(f"Torch-Pruning cannot trace the channels through {where} {describe(model, layer)} ({reason}); "
                     "that layer kind is not supported yet (never_prune does not help: the whole model is traced), "
                     "so use another model or rewrite that layer.")


def failure_reason(exc: BaseException) -> str:
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
