"""Convolutions: dense (groups 1), depthwise and grouped ones, priced and pruned.

A grouped convolution (ResNeXt, RegNet) is pruned as Torch-Pruning prunes it: the group
count stays, and the channels of both its sides are removed at the same positions in
every convolution group (:meth:`ConvKind.channel_groups`), so its weights stay
``out * in / groups * kernel`` with integer channels per group."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.space.cost import QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, UnsupportedModel, register


def is_depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    """One filter per channel: inputs and outputs are the same channels."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


class ConvKind(LayerKind):
    """``nn.Conv1d/2d/3d`` (transposed ones are priced but not reshaped by the level database).

    MACs are ``positions * out_channels * in_channels/groups * kernel``; a depthwise
    convolution's weights and MACs scale with its one channel count. Only ``nn.Conv2d``
    gets a latency table (the zoo's convolutions)."""

    types = (nn.modules.conv._ConvNd,)
    root = True

    def channel_groups(self, module: nn.Module) -> int:
        return 1 if is_depthwise(module) else module.groups

    def position_channels(self, module: nn.Module) -> int:
        return module.out_channels

    def macs(self, module: nn.Module, positions: int) -> int:
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return positions * module.out_channels * per_out

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        kernel = math.prod(module.kernel_size)
        n_out = layer.n_out(module.out_channels)
        if module.groups == 1:
            n_in = layer.n_in(module.in_channels)
            params.add_product(n_in, n_out, kernel)
            flops.add_product(n_in, n_out, kernel * layer.positions)
        elif is_depthwise(module):
            params.add_count(n_out, kernel)
            flops.add_count(n_out, kernel * layer.positions)
        else:  # grouped: every output channel sees in_channels / groups inputs
            n_in = layer.n_in(module.in_channels)
            params.add_product(n_in, n_out, Fraction(kernel, module.groups))
            flops.add_product(n_in, n_out, Fraction(kernel * layer.positions, module.groups))
        if module.bias is not None:
            params.add_count(n_out, 1)

    def timed(self, module: nn.Module) -> bool:
        return isinstance(module, nn.Conv2d)

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.in_channels, module.out_channels

    def shares_channels(self, module: nn.Module) -> bool:
        return is_depthwise(module)

    def standalone(self, module: nn.Module, in_shape: tuple[int, ...], *, batch: int, n_in: int,
                   n_out: int) -> tuple[nn.Module, torch.Tensor]:
        depthwise = is_depthwise(module)
        groups = n_out if depthwise else module.groups
        if not depthwise and (n_in % groups or n_out % groups):
            raise UserError(f"the latency model cannot time {module} with {n_in} inputs and {n_out} outputs.")
        layer = nn.Conv2d(n_out if depthwise else n_in, n_out, module.kernel_size, stride=module.stride,
                          padding=module.padding, dilation=module.dilation, groups=groups,
                          bias=module.bias is not None)
        return layer, torch.randn(batch, n_out if depthwise else n_in, *in_shape[1:])

    def fix_shape(self, name: str, module: nn.Module) -> None:
        if module.transposed:
            raise UnsupportedModel(f"transposed convolution {name!r}")
        out_channels, in_per_group = module.weight.shape[:2]
        if is_depthwise(module):
            module.groups = module.in_channels = out_channels
        else:  # the group count stays; both sides lose the same positions in every group
            module.in_channels = in_per_group * module.groups
        module.out_channels = out_channels


CONV = register(ConvKind())
