"""``nn.MultiheadAttention`` (torchvision's ViT): self-attention over the channels of its stream.

Torch-Pruning prunes an attention layer's embedding dimension with the stream it reads
and writes: the rows of the packed query/key/value projection at the same positions in
each of the three, its columns, and both sides of the output projection; the head count
stays, so the channels fall into one block per head (:meth:`channel_groups`) and every
head keeps the same width. The layer computes both projections inside its forward
without calling them as layers, so its kind prices them all: with ``n`` kept channels
and ``L`` tokens, ``4 n^2 (+ 4 n)`` parameters and ``L * 4 n^2`` MACs for the
projections, plus ``2 L^2 n`` for the score and value products (every head's ``L x L``
scores over its ``n / heads`` channels, twice), as ``FlopCounterMode`` counts them.
Self-attention only (key and value are the query's tokens); cross-attention or separate
key/value widths are left to the price check (:mod:`autoprune.space.verify`).

Its output projection (an ``NonDynamicallyQuantizableLinear``, never called as a layer)
is priced here, not by the linear kind.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, UnsupportedModel, register
from autoprune.space.layer_kinds.linear import LinearKind


class MultiheadAttentionKind(LayerKind):
    """``nn.MultiheadAttention`` with packed projections (``kdim == vdim == embed_dim``)."""

    types = (nn.MultiheadAttention,)

    def position_channels(self, module: nn.Module) -> int:
        return module.embed_dim  # the output's last dimension; positions are the query tokens

    def channel_groups(self, module: nn.Module) -> int:
        return module.num_heads

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
        module.head_dim = module.embed_dim // module.num_heads
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
