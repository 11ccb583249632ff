"""The rule every layer kind follows, and the registry that finds a layer's kind.

Five parts of autoprune need to know what a layer is: the cost model prices it
(:mod:`autoprune.space.analysis`), the reference counter counts it
(:mod:`autoprune.space.counting`), the latency tables time it standalone
(:mod:`autoprune.evaluation.latency_table`), the level database sets its shape
attributes after its tensors were sliced (:mod:`autoprune.space.level_database`), and
the dependency graph traces it (:mod:`autoprune.space.graph`). A :class:`LayerKind`
holds all of that for one kind of layer, so a new kind is one subclass and one
:func:`register` call instead of an edit in each of those modules.

A module's kind is found by its class's method resolution order: the kind registered for
the most specific class wins, so a kind for a subclass of ``nn.Linear`` overrides the
linear kind for that subclass only. A kind may name its classes by import path
(:attr:`LayerKind.type_names`) instead, for libraries autoprune does not import itself.
A module of no registered kind gets :data:`UNKNOWN`, whose defaults say what autoprune
does with a layer it does not know: its parameters are a fixed cost while no group
prunes it, pricing it pruned is refused, counting reports it as unsupported, and the
level database refuses to reshape it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import UserError
from autoprune.space.cost import LinearCount, QuadraticCost

logger = logging.getLogger(__name__)


class UnsupportedModel(ValueError):
    """The model holds a layer whose pruned shape the level database cannot set."""


class CannotPrice(UserError):
    """A pruned layer whose cost its kind cannot express; ``reason`` says why, in a few words,
    for the analysis's one refusal that lists every such layer."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PricedLayer:
    """One layer as the cost model sees it: its channel counts in terms of the groups.

    ``count_in`` and ``count_out`` are the parts of the layer's input and output channel
    counts that groups govern, as affine forms of the groups' kept counts whose constant
    already subtracts the governed channels (None: no group prunes that side), so adding
    the layer's full count gives the count of any candidate. ``positions`` is the
    number of output positions per sample (summed over calls) from
    :func:`autoprune.space.counting.layer_positions`.
    """

    name: str
    module: nn.Module
    count_in: LinearCount | None
    count_out: LinearCount | None
    positions: int
    #: ids of this layer's parameters that Torch-Pruning prunes as loose parameters and the
    #: analysis prices with their group (a ConvNeXt layer scale, a ViT class token)
    priced_elsewhere: frozenset[int] = frozenset()

    @property
    def pruned(self) -> bool:
        """Whether some group prunes this layer's inputs or outputs."""
        return self.count_in is not None or self.count_out is not None

    def own_parameters(self) -> list[nn.Parameter]:
        """The layer's own parameters (not its children's), less those priced elsewhere."""
        return [p for p in self.module.parameters(recurse=False) if id(p) not in self.priced_elsewhere]

    def n_in(self, full: int) -> LinearCount:
        """The input channel count of a candidate, for a layer of ``full`` inputs."""
        return _fixed_plus(self.count_in, full)

    def n_out(self, full: int) -> LinearCount:
        """The output channel count of a candidate, for a layer of ``full`` outputs."""
        return _fixed_plus(self.count_out, full)

    def n_shared(self, full: int) -> LinearCount:
        """The channel count of a layer whose inputs and outputs are the same channels
        (a normalisation, a depthwise convolution): whichever side the graph gave."""
        return _fixed_plus(self.count_out if self.count_out is not None else self.count_in, full)

    def cannot_price(self, reason: str = "autoprune cannot price its parameters yet") -> CannotPrice:
        """The refusal for a pruned layer whose parameters this kind cannot express."""
        return CannotPrice(
            f"layer {self.name!r} ({type(self.module).__name__}) is pruned with its neighbours, but {reason}; "
            "add it to never_prune.", reason=reason)


def _fixed_plus(count: LinearCount | None, full: int) -> LinearCount:
    """``count`` with the layer's full channel count added to its fixed part."""
    if count is None:
        return LinearCount(constant=full)
    return LinearCount(constant=count.constant + full, terms=dict(count.terms))


class LayerKind:
    """How autoprune traces, counts, prices, times and reshapes one kind of layer.

    Subclasses set :attr:`types` and override what applies to them; every method has
    the default of a layer autoprune does not know. Methods take the module itself, so
    one kind can tell apart variants of a type (a depthwise convolution).
    """

    #: module classes of this kind (their subclasses too, unless those have a kind of their own)
    types: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: module classes of this kind named ``module.QualifiedName``, for libraries autoprune does
    #: not import itself (torchvision); matched like :attr:`types`
    type_names: ClassVar[tuple[str, ...]] = ()
    #: whether a prunable group may be rooted at this layer's output channels (the
    #: layers whose outputs the search sizes: convolutions, linear layers)
    root: ClassVar[bool] = False
    #: how Torch-Pruning prunes this layer, for kinds it does not know itself (None: its own)
    tp_pruner: ClassVar[tp.pruner.BasePruningFunc | None] = None
    #: whether the layer is one unit to autoprune: Torch-Pruning traces it as one step from its
    #: input to its output (:mod:`autoprune.space.opaque`) and its :attr:`tp_pruner` prunes
    #: everything inside (without one, Torch-Pruning passes channels through it unchanged, as
    #: through any step it does not know: a reshape that only moves tokens), and this kind
    #: prices and counts everything inside, so the cost model, the counter and the latency
    #: tables skip its sub-layers (:func:`priced_modules`). For blocks whose insides
    #: Torch-Pruning's index mapping cannot follow (Swin's windowed attention)
    opaque: ClassVar[bool] = False

    # -- counting: the reference the cost model is held to -----------------------------

    def position_channels(self, module: nn.Module) -> int | None:
        """Output channels per position, for layers whose MACs scale with output
        positions (a convolution's ``H_out*W_out``, a linear layer's tokens); None
        for layers that need no positions."""
        return None

    def output_positions(self, module: nn.Module, inputs: tuple, output: torch.Tensor, batch: int) -> int:
        """Output positions per sample of one call (for layers with :meth:`position_channels`):
        the output's elements per sample over its channels by default; a layer whose MACs
        follow other positions (windows padded to whole windows) says so here."""
        return output.numel() // (batch * self.position_channels(module))

    def macs(self, module: nn.Module, positions: int) -> int | None:
        """Multiply-accumulates of the layer for one input, given its output positions;
        None where its arithmetic is not counted (reported as unsupported if it holds
        parameters). Normalisations, activations and lookups count 0 by convention."""
        return None

    def channel_groups(self, module: nn.Module) -> int:
        """Into how many equal blocks the layer splits its channels (a grouped convolution's
        ``groups``, attention heads): pruning removes the same positions in every block,
        keeping the block count, as Torch-Pruning's pruners do; 1 for no blocks."""
        return 1

    def cost_denominator(self, module: nn.Module) -> int:
        """A number that every fraction in the layer's prices divides into whole numbers (the
        cost model's :attr:`~autoprune.space.cost.QuadraticCost.denominator` is the lcm over
        layers): a grouped convolution's groups by default; a layer with one parameter row per
        head, priced per kept channel, its head width."""
        return self.channel_groups(module)

    def channel_unit(self, module: nn.Module) -> int:
        """How many consecutive channels the layer removes together (an attention head's
        ``head_dim``): kept counts are multiples of it and pruning removes whole units,
        ranked by their mean score; 1 for single channels."""
        return 1

    # -- pricing: the quadratic cost model -----------------------------------------------

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        """Add the layer's parameters and MACs to the cost forms, as affine counts of
        its channels; raise a :class:`UserError` naming the layer where they are not."""
        own = layer.own_parameters()
        if not own:
            return
        if layer.pruned:
            raise layer.cannot_price()
        params.add_count(LinearCount(constant=1), sum(p.numel() for p in own))

    # -- latency: per-layer tables timed standalone ----------------------------------------

    def timed(self, module: nn.Module) -> bool:
        """Whether the latency model gives this layer a table of its own."""
        return False

    def channels(self, module: nn.Module) -> tuple[int, int]:
        """The layer's full input and output channel counts (for timed layers)."""
        raise NotImplementedError(f"{type(self).__name__} times no layer")

    def shares_channels(self, module: nn.Module) -> bool:
        """Whether the layer has one channel count for input and output (a normalisation,
        a depthwise convolution): its table then varies over the output count only."""
        return False

    def standalone(self, module: nn.Module, in_shape: tuple[int, ...], *, batch: int, n_in: int,
                   n_out: int) -> tuple[nn.Module, torch.Tensor]:
        """A fresh layer like ``module`` with ``n_in`` inputs and ``n_out`` outputs, and an
        input for it of ``batch`` samples shaped like ``in_shape`` (one sample's input
        in the network); ``n_in`` is 0 where :meth:`shares_channels`."""
        raise NotImplementedError(f"{type(self).__name__} times no layer")

    # -- level database: shape attributes after slicing ----------------------------------

    def fix_shape(self, name: str, module: nn.Module) -> None:
        """Set the attributes describing the layer's shape from its (sliced) tensors, or
        raise :class:`UnsupportedModel` when they cannot be set."""
        if any(True for _ in module.parameters(recurse=False)):
            raise UnsupportedModel(f"layer {name!r} of type {type(module).__name__}")

    def after_pruning(self, module: nn.Module) -> None:
        """Set what the module keeps of its children's widths once Torch-Pruning pruned them
        (a ``hidden_dim`` its forward reshapes with); nothing for most kinds."""
        return None


#: the kind of a layer no registered kind describes
UNKNOWN = LayerKind()

_REGISTRY: dict[type[nn.Module], LayerKind] = {}
_NAMED: dict[str, LayerKind] = {}


def register(kind: LayerKind) -> LayerKind:
    """Make ``kind`` the kind of its :attr:`LayerKind.types`; returns it.

    A class already taken by another kind is refused: :func:`unregister` that one first,
    so that no rule is replaced by accident."""
    if not isinstance(kind, LayerKind) or not (kind.types or kind.type_names):
        raise ValueError(f"register takes a LayerKind with at least one type, got {kind!r}")
    taken = [t.__name__ for t in kind.types if _REGISTRY.get(t, kind) is not kind]
    taken += [n for n in kind.type_names if _NAMED.get(n, kind) is not kind]
    if taken:
        raise ValueError(f"{type(kind).__name__}: {', '.join(taken)} already has a layer kind; unregister it first")
    for module_type in kind.types:
        _REGISTRY[module_type] = kind
    for type_name in kind.type_names:
        _NAMED[type_name] = kind
    logger.debug("layer kind %s registered for %s", type(kind).__name__, [t.__name__ for t in kind.types])
    return kind


def unregister(kind: LayerKind) -> None:
    """Forget ``kind`` for every class it was registered for."""
    for module_type in [t for t, k in _REGISTRY.items() if k is kind]:
        del _REGISTRY[module_type]
    for type_name in [n for n, k in _NAMED.items() if k is kind]:
        del _NAMED[type_name]


def kind_of(module: nn.Module) -> LayerKind:
    """The registered kind of ``module``'s most specific class, or :data:`UNKNOWN`."""
    for cls in type(module).__mro__:
        kind = _REGISTRY.get(cls) or _NAMED.get(f"{cls.__module__}.{cls.__qualname__}")
        if kind is not None:
            return kind
    return UNKNOWN


def priced_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``model.named_modules()`` less the sub-layers of :attr:`LayerKind.opaque` layers, whose
    kinds price and count them: what the cost model and the counter walk."""
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        yield name, module
        if kind_of(module).opaque:
            inside.append(f"{name}." if name else "")


def tp_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """Torch-Pruning pruners for the classes in ``model`` whose kind brings its own.

    Torch-Pruning looks customised pruners up by a module's exact class, so every class
    present is named, subclasses included."""
    pruners: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {}
    for module in model.modules():
        pruner = kind_of(module).tp_pruner
        if pruner is not None:
            pruners[type(module)] = pruner
    return pruners
