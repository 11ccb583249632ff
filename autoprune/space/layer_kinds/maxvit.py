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

from fractions import Fraction

from torch import nn

from autoprune.space.cost import QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, register
from autoprune.space.layer_kinds.swin import PackedHeadsPruner, price_windowed_attention, windowed_attention_macs


class RelativeAttentionPruner(PackedHeadsPruner):
    """MaxViT's attention: per head, a column of its relative position bias table."""

    projections = ("to_qkv", "merge")
    heads_attr = "n_heads"

    def cut_heads(self, layer: nn.Module, heads: list[int]) -> None:
        layer.relative_position_bias_table = self._prune_parameter_and_grad(layer.relative_position_bias_table,
                                                                            heads, 1)


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
