"""torchvision's MaxViT: its attention as a unit, its window and grid partitions as reshapes
that only move tokens.

MaxViT's ``RelativePositionalMultiHeadAttention`` is Swin's windowed attention without the
shift or the padding (one width for input, heads and output, a packed query/key/value
projection split into three blocks, a relative position bias table with a column per head),
so it is traced, pruned by whole heads and priced as Swin's is
(:mod:`autoprune.space.layer_kinds.swin`); its windows are the ``max_seq_len`` tokens of a
partition. ``WindowPartition``, ``WindowDepartition`` and ``SwapAxes`` reorder tokens and
move the channels between the second and the last dimension; Torch-Pruning's reshape
mapping took them for flattening and its channel analysis grew past its bound, so they are
traced as one step that passes channels through unchanged (opaque, without a pruner: they
hold no parameters). The attention's ``scale_factor`` was set from the full width at
construction and is kept, so a pruned model scores as it was trained to.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from autoprune.space.cost import QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, register
from autoprune.space.layer_kinds.swin import (
    cut_projections,
    price_windowed_attention,
    whole_heads,
    windowed_attention_macs,
)


class RelativeAttentionPruner(BasePruningFunc):
    """Removes whole heads of MaxViT's attention (``head_dim`` consecutive channels each)."""

    def check(self, layer: nn.Module, idxs: Sequence[int], to_output: bool) -> None:
        BasePruningFunc.check(self, layer, idxs, to_output)
        whole_heads(idxs, layer.head_dim)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        removed = {int(i) for i in idxs}
        keep = [i for i in range(layer.to_qkv.in_features) if i not in removed]
        heads = [h for h in range(layer.n_heads) if h * layer.head_dim in keep]
        cut_projections(self, layer.to_qkv, layer.merge, keep)
        layer.relative_position_bias_table = self._prune_parameter_and_grad(layer.relative_position_bias_table,
                                                                            heads, 1)
        layer.n_heads = len(heads)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.to_qkv.in_features

    get_in_channels = get_out_channels


class RelativeAttentionKind(LayerKind):
    """``torchvision.models.maxvit.RelativePositionalMultiHeadAttention`` on ``[B, G, P, C]``."""

    type_names = ("torchvision.models.maxvit.RelativePositionalMultiHeadAttention",)
    tp_pruner = RelativeAttentionPruner()
    opaque = True

    def position_channels(self, module: nn.Module) -> int:
        return module.merge.out_features

    def channel_unit(self, module: nn.Module) -> int:
        return module.head_dim

    def cost_denominator(self, module: nn.Module) -> int:
        return module.head_dim

    def macs(self, module: nn.Module, positions: int) -> int:
        return windowed_attention_macs(module.to_qkv, module.merge, module.max_seq_len, positions)

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        width = price_windowed_attention(layer, module.to_qkv, module.merge, module.max_seq_len, flops=flops,
                                         params=params)
        params.add_count(width, Fraction(module.relative_position_bias_table.shape[0], module.head_dim))

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.n_heads = module.relative_position_bias_table.shape[1]


class TokenReorderKind(LayerKind):
    """MaxViT's partitions and axis swaps: no parameters, channels passed through unchanged."""

    type_names = ("torchvision.models.maxvit.WindowPartition", "torchvision.models.maxvit.WindowDepartition",
                  "torchvision.models.maxvit.SwapAxes")
    opaque = True

    def macs(self, module: nn.Module, positions: int) -> int:
        return 0


RELATIVE_ATTENTION = register(RelativeAttentionKind())
TOKEN_REORDER = register(TokenReorderKind())
