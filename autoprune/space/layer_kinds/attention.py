"""``nn.MultiheadAttention`` (torchvision's ViT): self-attention over the channels of its stream.

``nn.MultiheadAttention`` has one width for its input, its heads and its output
(``embed_dim = num_heads * head_dim``), so the channels of the stream it reads and writes
are the channels of its heads: channel ``c`` belongs to head ``c // head_dim``. autoprune
prunes it by whole heads (:meth:`channel_unit`: kept counts are multiples of
``head_dim``; the channel order ranks heads, :func:`autoprune.space.materialize.channel_order`):
Torch-Pruning's own pruner keeps the head count and shrinks every head, so
:class:`HeadPruner` takes its place, removing the rows of the packed query/key/value
projection of the removed heads, the same columns, both sides of the output projection,
and lowering ``num_heads`` with ``head_dim`` kept. Where the stream is shared by several
attention layers (every block of a ViT reads and writes the same residual stream), they
lose the same heads: their widths are one group.

The layer computes both projections inside its forward without calling them as layers,
so its kind prices them all: with ``n`` kept channels and ``L`` tokens, ``4 n^2 (+ 4 n)``
parameters and ``L * 4 n^2`` MACs for the projections, plus ``2 L^2 n`` for the score and
value products (every head's ``L x L`` scores over its ``head_dim`` channels, twice), as
``FlopCounterMode`` counts them; the head count does not enter. Self-attention only (key
and value are the query's tokens); cross-attention or separate key/value widths are left
to the price check (:mod:`autoprune.space.verify`).

Its output projection (an ``NonDynamicallyQuantizableLinear``, never called as a layer)
is priced here, not by the linear kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear
from torch_pruning.pruner.function import BasePruningFunc, MultiheadAttentionPruner

from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, UnsupportedModel, register
from autoprune.space.layer_kinds.linear import LinearKind


class HeadPruner(MultiheadAttentionPruner):
    """Torch-Pruning's attention pruner, removing whole heads: the removed channels must be
    all of some heads' (``head_dim`` consecutive channels each), and the layer keeps its
    ``head_dim`` with fewer heads."""

    def check(self, layer: nn.Module, idxs: Sequence[int], to_output: bool) -> None:
        BasePruningFunc.check(self, layer, idxs, to_output)
        heads = {int(i) // layer.head_dim for i in idxs}
        if len(set(int(i) for i in idxs)) != len(heads) * layer.head_dim:
            raise ValueError(f"attention channels {sorted(idxs)[:8]}... are not whole heads of {layer.head_dim}")

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        head_dim = layer.head_dim
        super().prune_out_channels(layer, idxs)
        layer.head_dim = head_dim
        layer.num_heads = layer.embed_dim // head_dim
        return layer

    prune_in_channels = prune_out_channels


class MultiheadAttentionKind(LayerKind):
    """``nn.MultiheadAttention`` with packed projections (``kdim == vdim == embed_dim``)."""

    types = (nn.MultiheadAttention,)
    tp_pruner = HeadPruner()

    def position_channels(self, module: nn.Module) -> int:
        return module.embed_dim  # the output's last dimension; positions are the query tokens

    def channel_unit(self, module: nn.Module) -> int:
        return module.head_dim

    def macs(self, module: nn.Module, positions: int) -> int | None:
        if not module._qkv_same_embed_dim:
            return None
        width = module.embed_dim
        return positions * 4 * width * width + 2 * positions * positions * width

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        if not module._qkv_same_embed_dim or module.bias_k is not None:
            if layer.pruned:
                raise layer.cannot_price("autoprune prices only packed self-attention without added key biases")
            super().price(layer, flops=flops, params=params)
            params.add_count(LinearCount(constant=1), sum(p.numel() for p in module.out_proj.parameters()))
            return
        width = layer.n_shared(module.embed_dim)
        tokens = layer.positions
        params.add_product(width, width, 4)  # query, key, value and output projections
        biases = (3 if module.in_proj_bias is not None else 0) + (1 if module.out_proj.bias is not None else 0)
        if biases:
            params.add_count(width, biases)
        flops.add_product(width, width, 4 * tokens)
        flops.add_count(width, 2 * tokens * tokens)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        if module.in_proj_weight is None:
            raise UnsupportedModel(f"attention layer {name!r} with separate projections")
        module.embed_dim = module.kdim = module.vdim = module.in_proj_weight.shape[1]
        module.num_heads = module.embed_dim // module.head_dim  # whole heads go; each keeps its width
        module.out_proj.out_features, module.out_proj.in_features = module.out_proj.weight.shape


class AttentionOutputKind(LinearKind):
    """The output projection inside ``nn.MultiheadAttention``: counted and reshaped like a
    linear layer, priced by its attention layer (it is never called as a layer itself)."""

    types = (NonDynamicallyQuantizableLinear,)
    root = False

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        return None


MULTIHEAD_ATTENTION = register(MultiheadAttentionKind())
ATTENTION_OUTPUT = register(AttentionOutputKind())
