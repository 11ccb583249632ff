"""Which layer of a model a failure of the analysis belongs to.

The analysis runs the model (to count positions, to find the classifier) and lets
Torch-Pruning trace it into a dependency graph. When either fails on an architecture we
do not support, the exception names an operation deep inside a library, not a layer the
user can find in ``model.named_modules()``. A :class:`LayerLocator` watches a forward pass
with hooks on every module and records two things: which modules are open (entered and
not yet left: after an exception the innermost one is where it happened), and which
module's ``forward`` created each autograd node (Torch-Pruning's graph is built from
those nodes, so an operation it fails on afterwards, a reshape for example, can be
traced back to the layer that performs it). Watching costs a walk of the autograd graph
per module, so the analysis only does it to explain a failure it already had.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class LayerLocator:
    """Forward hooks on every module of ``model`` that record where a forward pass is and
    which layer created each autograd node; use as a context manager around the step
    that failed, then ask :meth:`layer_of` about the exception it raised again."""

    def __init__(self, *, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.names = {module: name for name, module in model.named_modules()}
        self.open: list[nn.Module] = []  # modules entered and not left, outermost first
        self.owner: dict[Any, str] = {}  # autograd node -> name of the innermost module that created it
        self._inputs: dict[nn.Module, list[set[Any]]] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "LayerLocator":
        for module in self.names:
            self._hooks.append(module.register_forward_pre_hook(self._entered, with_kwargs=True))
            self._hooks.append(module.register_forward_hook(self._left, with_kwargs=True))
        return self

    def __exit__(self, *_exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _entered(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module is self.model:  # a new pass: what an earlier, failed one left open is stale
            self.open.clear()
        self.open.append(module)
        self._inputs.setdefault(module, []).append(_grad_fns((args, kwargs)))

    def _left(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.open and self.open[-1] is module:
            self.open.pop()
        stops = self._inputs[module].pop() if self._inputs.get(module) else set()
        # the nodes between this call's inputs and its output were created by its forward;
        # children left first, so a node already owned stays with the innermost layer
        name = self.names[module]
        todo = list(_grad_fns(output))
        seen: set[Any] = set()
        while todo:
            node = todo.pop()
            if node is None or node in seen or node in stops:
                continue
            seen.add(node)
            self.owner.setdefault(node, name)
            todo.extend(next_node for next_node, _ in node.next_functions)

    def layer_of(self, exc: BaseException) -> tuple[str, str | None] | None:
        """Where ``exc`` (raised while this locator watched) happened: the innermost module
        still open, else the layer behind the Torch-Pruning graph node being processed when
        it was raised, with that node's autograd operation (``ViewBackward0``: a reshape)
        when the node is an operation inside the layer rather than the layer itself; None
        when neither is known."""
        if self.open:
            name = self.names[self.open[-1]]
            return (name, None) if name else None
        for node in _graph_nodes(exc):
            module = getattr(node, "module", None)
            if isinstance(module, nn.Module) and self.names.get(module):
                return self.names[module], None
            grad_fn = getattr(node, "grad_fn", None)
            name = self.owner.get(grad_fn)
            if name:
                return name, grad_fn.name()
        return None


def describe(model: nn.Module, name: str) -> str:
    """``'name' (Type)`` for a layer of ``model``, as messages name layers."""
    return f"{name!r} ({type(model.get_submodule(name)).__name__})"


def _grad_fns(value: Any) -> set[Any]:
    """The autograd nodes of the tensors in ``value`` (nested tuples, lists, dicts)."""
    found: set[Any] = set()
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, torch.Tensor):
            if item.grad_fn is not None:
                found.add(item.grad_fn)
        elif isinstance(item, (tuple, list)):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif hasattr(item, "to_tuple"):  # Hugging Face model outputs
            todo.extend(item.to_tuple())
    return found


def _graph_nodes(exc: BaseException) -> list[Any]:
    """Torch-Pruning graph nodes held by the frames ``exc`` passed through, innermost first."""
    from torch_pruning.dependency.node import Node

    frames = []
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    nodes = []
    for frame in reversed(frames):
        nodes.extend(value for value in frame.f_locals.values() if isinstance(value, Node))
    return nodes
