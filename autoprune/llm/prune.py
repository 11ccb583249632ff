"""Physically prune a causal LM: slice heads and neurons, remove whole sub-blocks.

A candidate becomes *kept indices* per group (query heads of an attention, neurons of an
MLP; an empty list removes the sub-block) and the indices become slices of the weights:

- attention (Llama layout): query rows and output-projection columns of the kept query
  heads, key/value rows (and biases, Qwen2) of the key/value heads they read;
  ``num_key_value_groups`` is set per layer, so layers may differ in heads and in the
  number of query heads per key/value head;
- attention (GPT-2): the fused ``c_attn`` ``Conv1D`` keeps the columns of the kept
  heads in each of its query, key and value thirds (its weight is stored ``(in, out)``),
  ``c_proj`` the matching rows; ``num_heads`` and ``split_size`` are set per layer;
- MLP: gate/up rows (GPT-2: ``c_fc`` columns) and down columns (``c_proj`` rows);
- a removed sub-block becomes :class:`RemovedAttention` / :class:`RemovedMLP`, which add
  nothing to the residual stream, and its normalisation becomes ``nn.Identity``.

Which indices are kept follows :mod:`autoprune.llm.importance`, scored once on the dense
weights. :func:`prune_to_indices` applies saved indices to a freshly built model of the
same config, so an exported state dict loads into exactly the same architecture.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.llm.importance import UnitOrder, unit_orders
from autoprune.llm.space import parse_group_name
from autoprune.llm.structure import BlockDims, LMStructure, find_structure
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)


class RemovedAttention(nn.Module):
    """An attention sub-block pruned away: its output is zero, so the residual passes through.

    It still appends one placeholder entry per token to the key/value cache (shape
    ``(batch, 1, tokens, 1)``): a forward pass given a cache and no positions reads the
    cached length from the cache's layer 0 (``get_seq_length``) to place the new tokens,
    so with layer 0's cache left empty, decoding token by token would restart positions
    at 0 (``generate`` tracks positions itself and is not affected)."""

    def __init__(self, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, None]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            cache = getattr(cache, "self_attention_cache", cache)
            batch, tokens = hidden_states.shape[0], hidden_states.shape[-2]
            placeholder = hidden_states.new_zeros(batch, 1, tokens, 1)
            cache.update(placeholder, placeholder, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class RemovedMLP(nn.Module):
    """An MLP sub-block pruned away: its output is zero, so the residual passes through."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


@dataclass(frozen=True)
class Slice:
    """Keep ``index`` along ``dim`` of parameter ``name``."""

    name: str
    dim: int
    index: torch.Tensor


def _span(units: list[int], width: int, offset: int = 0) -> torch.Tensor:
    """Feature indices of whole units (heads) of ``width`` features, shifted by ``offset``."""
    if not units:
        return torch.zeros(0, dtype=torch.long)
    base = torch.as_tensor(units, dtype=torch.long)[:, None] * width + offset
    return (base + torch.arange(width)).reshape(-1)


def kv_heads_of(query_heads: list[int], heads_per_kv: int) -> list[int]:
    """The key/value heads read by ``query_heads`` (each must be read by equally many)."""
    counts: dict[int, int] = {}
    for h in query_heads:
        counts[h // heads_per_kv] = counts.get(h // heads_per_kv, 0) + 1
    if len(set(counts.values())) > 1:
        raise ValueError(f"query heads {query_heads} read their key/value heads unequally often")
    return sorted(counts)


def attention_slices(structure: LMStructure, block: BlockDims, heads: list[int]) -> list[Slice]:
    """Slices that keep query ``heads`` (sorted) of ``block``'s attention."""
    d, path = block.head_dim, block.attn
    if structure.layout == "gpt2":
        width = block.num_heads * d
        cols = torch.cat([_span(heads, d, part * width) for part in range(3)])
        out = [Slice(f"{path}.c_attn.weight", 1, cols), Slice(f"{path}.c_proj.weight", 0, _span(heads, d))]
        if "c_attn" in block.attn_bias:
            out.append(Slice(f"{path}.c_attn.bias", 0, cols))
        return out
    kv = _span(kv_heads_of(heads, block.heads_per_kv), d)
    q = _span(heads, d)
    out = [Slice(f"{path}.q_proj.weight", 0, q), Slice(f"{path}.k_proj.weight", 0, kv),
           Slice(f"{path}.v_proj.weight", 0, kv), Slice(f"{path}.o_proj.weight", 1, q)]
    for proj, index in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
        if proj in block.attn_bias:
            out.append(Slice(f"{path}.{proj}.bias", 0, index))
    return out


def mlp_slices(structure: LMStructure, block: BlockDims, neurons: list[int]) -> list[Slice]:
    """Slices that keep FFN ``neurons`` (sorted) of ``block``'s MLP."""
    index, path = torch.as_tensor(neurons, dtype=torch.long), block.mlp
    if structure.layout == "gpt2":
        out = [Slice(f"{path}.c_fc.weight", 1, index), Slice(f"{path}.c_proj.weight", 0, index)]
        return out + ([Slice(f"{path}.c_fc.bias", 0, index)] if "c_fc" in block.mlp_bias else [])
    out = [Slice(f"{path}.gate_proj.weight", 0, index), Slice(f"{path}.up_proj.weight", 0, index),
           Slice(f"{path}.down_proj.weight", 1, index)]
    return out + [Slice(f"{path}.{p}.bias", 0, index) for p in ("gate_proj", "up_proj") if p in block.mlp_bias]


def group_slices(structure: LMStructure, name: str, kept: list[int]) -> list[Slice]:
    """Slices of group ``name`` (``layers.<i>.attn|mlp``) keeping ``kept`` (non-empty)."""
    index, kind = parse_group_name(name)
    block = structure.blocks[index]
    return attention_slices(structure, block, kept) if kind == "attn" else mlp_slices(structure, block, kept)


def set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter ``name`` of ``model`` by ``value`` (keeping its ``requires_grad``)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters[attr]
    module._parameters[attr] = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)


def fix_shapes(structure: LMStructure, model: nn.Module, name: str) -> None:
    """Set the shape attributes of group ``name``'s layers from their (sliced) weights."""
    index, kind = parse_group_name(name)
    block = structure.blocks[index]
    module = model.get_submodule(block.attn if kind == "attn" else block.mlp)
    for child in module.children():
        if isinstance(child, nn.Linear):
            child.out_features, child.in_features = child.weight.shape
        elif hasattr(child, "nf") and hasattr(child, "nx"):  # GPT-2 Conv1D, weight (in, out)
            child.nx, child.nf = child.weight.shape
    if kind != "attn":
        return
    d = block.head_dim
    if structure.layout == "gpt2":
        module.num_heads = module.c_attn.weight.shape[1] // (3 * d)
        module.split_size = module.num_heads * d
        return
    module.num_heads = module.q_proj.weight.shape[0] // d
    module.num_key_value_heads = module.k_proj.weight.shape[0] // d
    module.num_key_value_groups = module.num_heads // module.num_key_value_heads


def remove_sub_block(structure: LMStructure, model: nn.Module, name: str) -> None:
    """Replace group ``name``'s sub-block by a zero module and its normalisation by identity."""
    index, kind = parse_group_name(name)
    block = structure.blocks[index]
    layer = model.get_submodule(block.path)
    path, norm = (block.attn, block.attn_norm) if kind == "attn" else (block.mlp, block.mlp_norm)
    replacement = RemovedAttention(index) if kind == "attn" else RemovedMLP()
    setattr(layer, path.rpartition(".")[2], replacement)
    setattr(layer, norm.rpartition(".")[2], nn.Identity())


def check_indices(structure: LMStructure, keep_indices: Mapping[str, list[int]]) -> None:
    """Refuse kept indices that do not describe a valid architecture of ``structure``."""
    for name, kept in keep_indices.items():
        try:
            index, kind = parse_group_name(name)
        except ValueError as exc:
            raise UserError(f"kept indices name an unknown group: {exc}.") from None
        if index >= structure.n_layers:
            raise UserError(f"kept indices name block {index}, but the model has {structure.n_layers} blocks.")
        block = structure.blocks[index]
        size = block.num_heads if kind == "attn" else block.intermediate
        if list(kept) != sorted(set(kept)) or any(not 0 <= int(i) < size for i in kept):
            raise UserError(f"kept indices of {name} must be sorted distinct integers in [0, {size}).")
        if kind == "attn" and kept:
            try:
                kv_heads_of(list(kept), block.heads_per_kv)
            except ValueError as exc:
                raise UserError(f"kept heads of {name} are not a valid grouped-query attention: {exc}.") from None


def prune_to_indices(model: nn.Module, keep_indices: Mapping[str, list[int]]) -> nn.Module:
    """Prune the dense ``model`` in place to ``keep_indices`` (group -> sorted kept indices;
    an empty list removes the sub-block; absent groups stay dense) and return it."""
    structure = find_structure(model)
    check_indices(structure, keep_indices)
    with torch.no_grad():
        for name, kept in keep_indices.items():
            if not kept:
                remove_sub_block(structure, model, name)
                continue
            for piece in group_slices(structure, name, list(kept)):
                tensor = model.get_parameter(piece.name)
                set_parameter(model, piece.name, tensor.index_select(piece.dim, piece.index))
            fix_shapes(structure, model, name)
    return model


def keep_indices_at(space: SearchSpace, orders: Mapping[str, UnitOrder], levels: np.ndarray) -> dict[str, list[int]]:
    """Kept indices of every group not at its full size (as :func:`prune` returns them)."""
    counts = space.kept_counts(space.check(levels))
    return {g.name: orders[g.name].keep(int(k)) for g, k in zip(space.groups, counts) if int(k) < g.size}


def prune(dense: nn.Module, space: SearchSpace, levels: np.ndarray, *, importance: str = "magnitude",
          calibration: torch.Tensor | None = None,
          orders: Mapping[str, UnitOrder] | None = None) -> tuple[nn.Module, dict[str, list[int]]]:
    """A pruned copy of ``dense`` at ``levels``, and its kept indices per pruned group.

    ``orders`` (from :func:`autoprune.llm.importance.unit_orders`) skips scoring when the
    caller prunes many candidates of one dense model. ``dense`` is not modified."""
    if orders is None:
        orders = unit_orders(dense, find_structure(dense), space, importance=importance, calibration=calibration)
    keep = keep_indices_at(space, orders, levels)
    model = prune_to_indices(copy.deepcopy(dense).eval(), keep)
    return model, keep

