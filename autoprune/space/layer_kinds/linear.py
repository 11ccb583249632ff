"""Linear layers: weights and MACs are the product of their input and output features."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.space.cost import QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, register


class LinearKind(LayerKind):
    """``nn.Linear``: on a flat vector, or on every token of a sequence (features last,
    positions are the tokens)."""

    types = (nn.Linear,)
    root = True

    def position_channels(self, module: nn.Module) -> int:
        return module.out_features

    def macs(self, module: nn.Module, positions: int) -> int:
        return positions * module.out_features * module.in_features

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        n_in = layer.n_in(module.in_features)
        n_out = layer.n_out(module.out_features)
        params.add_product(n_in, n_out, 1)
        flops.add_product(n_in, n_out, layer.positions)
        if module.bias is not None:
            params.add_count(n_out, 1)

    def timed(self, module: nn.Module) -> bool:
        return True

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features

    def standalone(self, module: nn.Module, in_shape: tuple[int, ...], *, batch: int, n_in: int,
                   n_out: int) -> tuple[nn.Module, torch.Tensor]:
        layer = nn.Linear(n_in, n_out, bias=module.bias is not None)
        return layer, torch.randn(batch, *in_shape[:-1], n_in)  # features are the last dimension

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.out_features, module.in_features = module.weight.shape


LINEAR = register(LinearKind())
