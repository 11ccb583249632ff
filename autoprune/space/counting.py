"""Count FLOPs (MACs) and params of a built model: the trusted reference.

The cost model predicts these numbers from a level vector; this module measures them
on a real ``nn.Module`` with forward hooks, so tests can hold the prediction to it.
Following fvcore, it reports what it could not count instead of silently counting zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
#: leaf modules with parameters whose FLOPs are, by the convention, not counted
NOT_COUNTED = NORM_TYPES + (nn.PReLU, nn.Embedding)


@dataclass
class Count:
    """FLOPs are multiply-accumulates for one input; ``unsupported`` names layers whose
    arithmetic was not counted although they hold parameters."""

    flops: int
    params: int
    unsupported: list[str] = field(default_factory=list)


def layer_positions(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Output positions per sample of each convolution and linear layer, summed over calls.

    A convolution's MACs are ``positions * out_channels * in_channels/groups * kernel``;
    positions is ``H_out * W_out`` (or tokens for a linear layer). Summing over calls
    makes a layer used twice count twice.
    """
    positions: dict[str, int] = {}
    batch = example_input.shape[0]
    hooks = []

    def make_hook(name: str, out_dim: int):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            positions[name] = positions.get(name, 0) + output.numel() // (batch * out_dim)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            hooks.append(module.register_forward_hook(make_hook(name, module.out_channels)))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(name, module.out_features)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return positions


def count(model: nn.Module, example_input: torch.Tensor) -> Count:
    """FLOPs (MACs per input) and parameter count of ``model`` at ``example_input``'s shape."""
    positions = layer_positions(model, example_input)
    flops = 0
    unsupported: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
            flops += positions.get(name, 0) * module.out_channels * per_out
        elif isinstance(module, nn.Linear):
            flops += positions.get(name, 0) * module.out_features * module.in_features
        elif not isinstance(module, NOT_COUNTED) and any(True for _ in module.parameters(recurse=False)):
            unsupported.append(f"{name} ({type(module).__name__})")
    params = sum(p.numel() for p in model.parameters())
    return Count(flops=int(flops), params=int(params), unsupported=unsupported)
