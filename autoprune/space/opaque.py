"""Layers that Torch-Pruning traces as one step: only their input reaches their output.

Torch-Pruning follows channels through every autograd node of a forward pass. Inside
Swin's windowed attention the tokens are cut into windows, the channels into heads, and the
attention scores are a product of two activations; its index mapping then ties every
channel to every other and multiplies index lists on every pass (minutes and all memory
for one group; :data:`autoprune.space.graph.GROUP_INDEX_BUDGET` stops it), and the
concatenation of Swin's patch merging failed it outright. A layer whose kind is
:attr:`~autoprune.space.layer_kinds.LayerKind.opaque` runs, while the graph is traced, as
its own forward under ``no_grad`` wrapped in one autograd node whose only input is the
layer's input. Torch-Pruning, which knows the layer through the kind's pruner, then sees a
layer with input and output channels and nothing inside it, and the kind's pruner cuts
everything inside consistently; what that costs is the kind's to price.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from autoprune.space.layer_kinds import kind_of


class _Step(torch.autograd.Function):
    """The output of a layer computed without autograd, attached to the layer's input only.
    The graph is walked, never differentiated, so no gradient flows back through it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return output.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        return None, None


@contextlib.contextmanager
def opaque_layers(model: nn.Module) -> Iterator[None]:
    """Within this block, every opaque layer of ``model`` (outermost ones) runs as one step."""
    patched: list[tuple[nn.Module, Any]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside) or not kind_of(module).opaque:
            continue
        inside.append(f"{name}." if name else "")
        patched.append((module, module.__dict__.get("forward")))
        module.forward = _as_one_step(module.forward)
    try:
        yield
    finally:
        for module, own in patched:
            if own is None:
                del module.forward
            else:
                module.forward = own


def _as_one_step(forward: Any) -> Any:
    def step(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(x, *args, **kwargs)
        with torch.no_grad():
            output = forward(x, *args, **kwargs)
        return _Step.apply(x, output)

    return step
