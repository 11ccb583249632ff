"""Embedding tables: a lookup, pruned along the embedding dimension with the channels it feeds."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.space.cost import QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, register


class EmbeddingKind(LayerKind):
    """``nn.Embedding``: ``num_embeddings`` rows of ``embedding_dim`` channels.

    Torch-Pruning prunes its embedding dimension (inputs and outputs alike) when the
    channels it writes are pruned, e.g. a residual stream. A lookup does no
    multiply-accumulate, so it counts 0 MACs (as in Torch-Pruning's counter); its
    parameters are the rows times the kept channels."""

    types = (nn.Embedding,)

    def macs(self, module: nn.Module, positions: int) -> int:
        return 0

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        params.add_count(layer.n_shared(module.embedding_dim), module.num_embeddings)

    def timed(self, module: nn.Module) -> bool:
        return True

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.embedding_dim, module.embedding_dim

    def shares_channels(self, module: nn.Module) -> bool:
        return True

    def standalone(self, module: nn.Module, in_shape: tuple[int, ...], *, batch: int, n_in: int,
                   n_out: int) -> tuple[nn.Module, torch.Tensor]:
        layer = nn.Embedding(module.num_embeddings, n_out, padding_idx=module.padding_idx)
        return layer, torch.randint(0, module.num_embeddings, (batch, *in_shape))

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.num_embeddings, module.embedding_dim = module.weight.shape


EMBEDDING = register(EmbeddingKind())
