"""torchvision's Swin Transformer (V1 and V2): windowed attention and patch merging as units.

Inside ``ShiftedWindowAttention`` the tokens are cut into windows and the channels into
heads, and the scores are a product of two activations; Torch-Pruning's index mapping
through that ties every channel to every other and grows without bound, and the
concatenation in ``PatchMerging`` made it fail. Both are :attr:`LayerKind.opaque`: traced
as one step from input to output (:mod:`autoprune.space.opaque`), pruned by the pruners
here, priced and counted by the kinds here.

The attention's input, heads and output are one width (``dim = num_heads * head_dim``), the
width of the residual stream of its stage, so as in a ViT
(:mod:`autoprune.space.layer_kinds.attention`) the stream of a stage goes by whole heads and
every block of the stage loses the same heads: the rows of the packed query/key/value
projection (three blocks of ``dim``), its columns, both sides of the output projection, and
per head the column of V1's relative position bias table, or V2's logit scale and the output
row of its continuous position bias MLP; ``head_dim`` is kept, ``num_heads`` falls. Patch
merging concatenates four neighbouring tokens (``4 * dim`` channels, four blocks of the
input's channels) and projects them to ``2 * dim``: its input channels are the previous
stage's stream, its output channels the next stage's.

Prices, at the windows' padded size (the attention pads the feature map to whole windows
before projecting; ``T`` padded tokens, ``N`` tokens per window, ``n`` kept channels, ``R``
relative offsets): ``T * 4 n^2`` MACs for the projections, ``2 T N n`` for the score and
value products, V2's position MLP ``R * (2 * hidden + hidden * heads)``; patch merging
``T_out * 4 n_in * n_out``. What scales per head is priced per kept channel divided by the
head width (:meth:`LayerKind.cost_denominator`), exact at whole heads. Named by import path:
autoprune does not import torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import ClassVar

import torch
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from autoprune.space.cost import LinearCount, QuadraticCost
from autoprune.space.layer_kinds.base import LayerKind, PricedLayer, register


def _kept(size: int, idxs: Sequence[int]) -> list[int]:
    removed = {int(i) for i in idxs}
    return [i for i in range(size) if i not in removed]


def _blocks(keep: list[int], size: int, count: int) -> list[int]:
    """``keep`` repeated in each of ``count`` consecutive blocks of ``size``."""
    return [b * size + i for b in range(count) for i in keep]


def whole_heads(idxs: Sequence[int], head_dim: int) -> None:
    """Refuse channels that are not all of some heads' (``head_dim`` consecutive channels each)."""
    heads = {int(i) // head_dim for i in idxs}
    if len({int(i) for i in idxs}) != len(heads) * head_dim:
        raise ValueError(f"attention channels {sorted(idxs)[:8]}... are not whole heads of {head_dim}")


def cut_projections(pruner: BasePruningFunc, qkv: nn.Linear, proj: nn.Linear, keep: list[int]) -> None:
    """Keep channels ``keep`` of a packed query/key/value projection (its rows in each of three
    blocks, its columns) and of the output projection after it (rows and columns)."""
    prune = pruner._prune_parameter_and_grad
    width = qkv.in_features
    qkv.weight = prune(prune(qkv.weight, _blocks(keep, width, 3), 0), keep, 1)
    if qkv.bias is not None:
        qkv.bias = prune(qkv.bias, _blocks(keep, width, 3), 0)
    proj.weight = prune(prune(proj.weight, keep, 0), keep, 1)
    if proj.bias is not None:
        proj.bias = prune(proj.bias, keep, 0)
    qkv.out_features, qkv.in_features = qkv.weight.shape
    proj.out_features, proj.in_features = proj.weight.shape


def price_windowed_attention(layer: PricedLayer, qkv: nn.Linear, proj: nn.Linear, window: int, *,
                             flops: QuadraticCost, params: QuadraticCost) -> LinearCount:
    """Price the projections and the score and value products of self-attention within windows
    of ``window`` tokens over ``layer.positions`` tokens; returns the kept width."""
    width = layer.n_shared(qkv.in_features)
    tokens = layer.positions
    params.add_product(width, width, 4)  # query, key and value projections, and the output projection
    biases = (3 if qkv.bias is not None else 0) + (1 if proj.bias is not None else 0)
    if biases:
        params.add_count(width, biases)
    flops.add_product(width, width, 4 * tokens)
    flops.add_count(width, 2 * tokens * window)
    return width


def windowed_attention_macs(qkv: nn.Linear, proj: nn.Linear, window: int, tokens: int) -> int:
    """MACs of the projections and the score and value products over ``tokens`` in windows."""
    width = qkv.in_features
    return tokens * width * (qkv.out_features + proj.out_features) + 2 * tokens * window * width


class PackedHeadsPruner(BasePruningFunc):
    """Removes whole heads of an attention layer whose input, heads and output are one width,
    with a packed query/key/value projection (``projections``: its name and the output
    projection's) and a head count in ``heads_attr``; :meth:`cut_heads` removes what the layer
    holds per head. The removed channels must be all of some heads'."""

    projections: ClassVar[tuple[str, str]] = ("qkv", "proj")
    heads_attr: ClassVar[str] = "num_heads"

    def _head_dim(self, layer: nn.Module) -> int:
        return getattr(layer, self.projections[0]).in_features // getattr(layer, self.heads_attr)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        qkv, proj = (getattr(layer, name) for name in self.projections)
        head_dim = self._head_dim(layer)
        whole_heads(idxs, head_dim)  # here, not in ``check``: a group calls this method directly
        keep = _kept(qkv.in_features, idxs)
        heads = [h for h in range(getattr(layer, self.heads_attr)) if h * head_dim in keep]
        cut_projections(self, qkv, proj, keep)
        self.cut_heads(layer, heads)
        setattr(layer, self.heads_attr, len(heads))
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return getattr(layer, self.projections[0]).in_features

    get_in_channels = get_out_channels

    def cut_heads(self, layer: nn.Module, heads: list[int]) -> None:
        """Keep only ``heads`` of what the layer holds per head."""
        raise NotImplementedError


class WindowAttentionPruner(PackedHeadsPruner):
    """``ShiftedWindowAttention(V2)``: per head, V1's bias-table column, or V2's logit scale and
    the output row of its position MLP."""

    def cut_heads(self, layer: nn.Module, heads: list[int]) -> None:
        prune = self._prune_parameter_and_grad
        if isinstance(getattr(layer, "relative_position_bias_table", None), nn.Parameter):  # V1
            layer.relative_position_bias_table = prune(layer.relative_position_bias_table, heads, 1)
        if _is_v2(layer):
            layer.logit_scale = prune(layer.logit_scale, heads, 0)
            last = _position_mlp(layer)[-1]
            last.weight = prune(last.weight, heads, 0)
            if last.bias is not None:
                last.bias = prune(last.bias, heads, 0)
            last.out_features = len(heads)


def _position_mlp(layer: nn.Module) -> list[nn.Linear]:
    """The linear layers of V2's continuous position bias MLP (the last one gives a bias per head)."""
    return [m for m in layer.cpb_mlp.modules() if isinstance(m, nn.Linear)]


def _is_v2(layer: nn.Module) -> bool:
    return getattr(layer, "logit_scale", None) is not None


class WindowAttentionKind(LayerKind):
    """``torchvision.models.swin_transformer.ShiftedWindowAttention`` and its V2 subclass."""

    type_names = ("torchvision.models.swin_transformer.ShiftedWindowAttention",)
    tp_pruner = WindowAttentionPruner()
    opaque = True

    def position_channels(self, module: nn.Module) -> int:
        return module.qkv.in_features

    def output_positions(self, module: nn.Module, inputs: tuple, output: torch.Tensor, batch: int) -> int:
        _, height, width, _ = inputs[0].shape
        window_h, window_w = module.window_size
        return math.ceil(height / window_h) * window_h * math.ceil(width / window_w) * window_w  # padded tokens

    def channel_unit(self, module: nn.Module) -> int:
        return module.qkv.in_features // module.num_heads

    def cost_denominator(self, module: nn.Module) -> int:
        return self.channel_unit(module)

    def macs(self, module: nn.Module, positions: int) -> int:
        window = module.window_size[0] * module.window_size[1]
        macs = windowed_attention_macs(module.qkv, module.proj, window, positions)
        if _is_v2(module):
            offsets = module.relative_coords_table.numel() // module.relative_coords_table.shape[-1]
            macs += sum(offsets * m.in_features * m.out_features for m in _position_mlp(module))
        return macs

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        head_dim = module.qkv.in_features // module.num_heads
        window = module.window_size[0] * module.window_size[1]
        width = price_windowed_attention(layer, module.qkv, module.proj, window, flops=flops, params=params)
        if not _is_v2(module):
            table = module.relative_position_bias_table
            params.add_count(width, Fraction(table.shape[0], head_dim))  # one column per head
            return
        *hidden, last = _position_mlp(module)
        offsets = module.relative_coords_table.numel() // module.relative_coords_table.shape[-1]
        per_head = module.logit_scale.numel() // module.num_heads + last.in_features + (last.bias is not None)
        params.add_count(width, Fraction(per_head, head_dim))
        flops.add_count(width, Fraction(offsets * last.in_features, head_dim))
        for linear in hidden:  # the position MLP's hidden layers do not depend on the heads
            params.add_count(LinearCount(constant=1), sum(p.numel() for p in linear.parameters()))
            flops.add_count(LinearCount(constant=1), offsets * linear.in_features * linear.out_features)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.num_heads = (module.logit_scale.shape[0] if _is_v2(module)
                            else module.relative_position_bias_table.shape[1])


class PatchMergingPruner(BasePruningFunc):
    """Patch merging's input channels (each in the four blocks of its concatenation, and in
    V1's normalisation over them) and output channels (and V2's normalisation after)."""

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        full = layer.reduction.in_features // 4
        keep = _blocks(_kept(full, idxs), full, 4)
        layer.reduction.weight = self._prune_parameter_and_grad(layer.reduction.weight, keep, 1)
        layer.reduction.in_features = len(keep)
        if _norm_on_input(layer):
            _prune_norm(self, layer.norm, keep)
        layer.dim = len(keep) // 4
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _kept(layer.reduction.out_features, idxs)
        layer.reduction.weight = self._prune_parameter_and_grad(layer.reduction.weight, keep, 0)
        if layer.reduction.bias is not None:
            layer.reduction.bias = self._prune_parameter_and_grad(layer.reduction.bias, keep, 0)
        layer.reduction.out_features = len(keep)
        if not _norm_on_input(layer):
            _prune_norm(self, layer.norm, keep)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.reduction.in_features // 4

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.reduction.out_features


def _norm_on_input(layer: nn.Module) -> bool:
    """V1 normalises the four concatenated tokens (``4 * dim``), V2 the projection (``2 * dim``);
    told by class, since a pruned layer's widths can make the two sizes equal."""
    return not any(cls.__name__ == "PatchMergingV2" for cls in type(layer).__mro__)


def _prune_norm(pruner: BasePruningFunc, norm: nn.Module, keep: list[int]) -> None:
    for attr in ("weight", "bias"):
        if getattr(norm, attr, None) is not None:
            setattr(norm, attr, pruner._prune_parameter_and_grad(getattr(norm, attr), keep, 0))
    norm.normalized_shape = (len(keep),)


class PatchMergingKind(LayerKind):
    """``torchvision.models.swin_transformer.PatchMerging`` and ``PatchMergingV2``."""

    type_names = ("torchvision.models.swin_transformer.PatchMerging",
                  "torchvision.models.swin_transformer.PatchMergingV2")
    tp_pruner = PatchMergingPruner()
    opaque = True
    root = True  # its output channels are the next stage's stream, named after it

    def position_channels(self, module: nn.Module) -> int:
        return module.reduction.out_features

    def macs(self, module: nn.Module, positions: int) -> int:
        return positions * module.reduction.in_features * module.reduction.out_features

    def price(self, layer: PricedLayer, *, flops: QuadraticCost, params: QuadraticCost) -> None:
        module = layer.module
        full_in = module.reduction.in_features // 4
        n_in, n_out = layer.n_in(full_in), layer.n_out(module.reduction.out_features)
        params.add_product(n_in, n_out, 4)
        flops.add_product(n_in, n_out, 4 * layer.positions)
        if module.reduction.bias is not None:
            params.add_count(n_out, 1)
        vectors = sum(1 for p in module.norm.parameters(recurse=False))
        if vectors:
            on_input = _norm_on_input(module)
            params.add_count(n_in if on_input else n_out, 4 * vectors if on_input else vectors)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.dim = module.reduction.weight.shape[1] // 4


WINDOW_ATTENTION = register(WindowAttentionKind())
PATCH_MERGING = register(PatchMergingKind())
