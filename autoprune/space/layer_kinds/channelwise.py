"""Layers holding one value per channel: normalisations and PReLU.

Pruned with the channels they follow, their parameters are a count of those channels
times the number of vectors (weight, bias); their arithmetic is not counted as MACs,
the convention of the pruning literature that :mod:`autoprune.space.counting` follows.
GroupNorm is priced, but the level database has no rule for its shape and refuses a
model holding one (the evaluator then materialises every candidate), as it always has.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, register


class ChannelwiseKind(LayerKind):
    """A layer whose parameters are vectors over the channels it passes through."""

    def macs(self, module: nn.Module, positions: int) -> int:
        return 0

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        own = layer.own_parameters()
        if layer.pruned and own and all(p.ndim == 1 for p in own):
            params.add_count(layer.n_shared(own[0].numel()), len(own))
        else:
            super().price(layer, flops=flops, params=params)


class BatchNormKind(ChannelwiseKind):
    """BatchNorm and InstanceNorm; ``nn.BatchNorm2d`` is timed with the activation that
    usually follows it (memory-bound passes that FLOPs do not see)."""

    types = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)

    def timed(self, module: nn.Module) -> bool:
        return isinstance(module, nn.BatchNorm2d)

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.num_features, module.num_features

    def shares_channels(self, module: nn.Module) -> bool:
        return True

    def standalone(self, module: nn.Module, in_shape: tuple[int, ...], *, batch: int, n_in: int,
                   n_out: int) -> tuple[nn.Module, torch.Tensor]:
        return nn.Sequential(nn.BatchNorm2d(n_out), nn.ReLU(inplace=True)), torch.randn(batch, n_out, *in_shape[1:])

    def fix_shape(self, name: str, module: nn.Module) -> None:
        reference = module.weight if module.weight is not None else module.running_mean
        if reference is not None:
            module.num_features = reference.shape[0]


class LastDimNormKind(ChannelwiseKind):
    """Normalisations over the last dimension(s) (``normalized_shape``); one over the
    channels alone (features last, as in a transformer) is timed at each count."""

    def _norm(self, module: nn.Module, channels: int) -> nn.Module:
        raise NotImplementedError

    def timed(self, module: nn.Module) -> bool:
        return len(module.normalized_shape) == 1

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.normalized_shape[-1], module.normalized_shape[-1]

    def shares_channels(self, module: nn.Module) -> bool:
        return True

    def standalone(self, module: nn.Module, in_shape: tuple[int, ...], *, batch: int, n_in: int,
                   n_out: int) -> tuple[nn.Module, torch.Tensor]:
        return self._norm(module, n_out), torch.randn(batch, *in_shape[:-1], n_out)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        if module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)


class LayerNormKind(LastDimNormKind):
    types = (nn.LayerNorm,)

    def _norm(self, module: nn.Module, channels: int) -> nn.Module:
        return nn.LayerNorm(channels, eps=module.eps, elementwise_affine=module.elementwise_affine,
                            bias=module.bias is not None)


class RMSNormPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning pruner for ``nn.RMSNorm``, which it does not know: without it, the
    weight is pruned as a loose parameter and ``normalized_shape`` is left stale (the
    pruned model then fails in ``F.rms_norm``). Inputs and outputs are the same channels."""

    TARGET_MODULES = nn.RMSNorm

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        removed = set(int(i) for i in idxs)
        keep = [i for i in range(layer.normalized_shape[-1]) if i not in removed]
        if layer.weight is not None:
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, layer.weight.ndim - 1)
        layer.normalized_shape = tuple(layer.normalized_shape[:-1]) + (len(keep),)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.normalized_shape[-1]

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.normalized_shape[-1]


class RMSNormKind(LastDimNormKind):
    """``nn.RMSNorm`` (the Llama family's norm): a weight vector, no bias."""

    types = (nn.RMSNorm,)
    tp_pruner = RMSNormPruner()

    def _norm(self, module: nn.Module, channels: int) -> nn.Module:
        return nn.RMSNorm(channels, eps=module.eps, elementwise_affine=module.elementwise_affine)


class GroupNormKind(ChannelwiseKind):
    """``nn.GroupNorm``: priced, not timed, and refused by the level database (default
    :meth:`LayerKind.fix_shape`)."""

    types = (nn.GroupNorm,)


class PReLUKind(ChannelwiseKind):
    """``nn.PReLU`` with one slope per channel, or a single shared slope that pruning
    leaves alone."""

    types = (nn.PReLU,)

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        if layer.module.weight.numel() == 1:  # one shared slope: Torch-Pruning leaves it whole
            params.add_count(LinearCount(constant=1), 1)
        else:
            super().price(layer, flops=flops, params=params)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.num_parameters = module.weight.numel()


BATCH_NORM = register(BatchNormKind())
LAYER_NORM = register(LayerNormKind())
RMS_NORM = register(RMSNormKind())
GROUP_NORM = register(GroupNormKind())
PRELU = register(PReLUKind())
