"""Which heads and neurons a causal LM keeps: importance scored once on the dense weights.

Each group's units are ranked once; the kept set at any count is then a prefix of that
ranking, so the sets of neighbouring levels are nested and pruning a candidate is only
slicing (no scoring per candidate).

A unit's score adds up its coupled weights: a query head's rows of the query projection
and its columns of the output projection; a key/value head's rows of the key and value
projections; an FFN neuron's rows of the gate and up projections and its column of the
down projection (biases with their rows). Two criteria:

- ``magnitude`` (default): the squared L2 norm of those weights (Torch-Pruning's group
  magnitude; the square ranks alike and adds over parts).
- ``activation``: Wanda's ``|W_ij| · ‖X_j‖`` summed over those weights, ``‖X_j‖`` being
  the L2 norm of input feature ``j`` of the weight's layer over calibration tokens (as
  Wanda, and FLAP for structured pruning, weigh a weight by the activation it multiplies).
  It needs calibration ``input_ids``.

With ``kv_groups`` a key/value head is ranked with its query heads (their scores added);
with ``heads`` query heads are ranked inside each key/value group.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.llm.space import group_attention_mode, parse_group_name
from autoprune.llm.structure import BlockDims, LMStructure
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

IMPORTANCES = ("magnitude", "activation")
#: calibration sequences per forward pass when collecting activation norms
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class UnitOrder:
    """Units of one group from most to least important, and how counts map to indices.

    ``kind`` is ``mlp`` (units are neurons), ``kv_groups`` (units are key/value heads with
    their ``heads_per_kv`` query heads) or ``heads`` (``order`` ranks the query heads
    inside each of ``n_kv`` groups, one row per group)."""

    kind: str
    order: tuple[tuple[int, ...], ...]
    heads_per_kv: int = 1

    def keep(self, count: int) -> list[int]:
        """Sorted kept indices (neurons, or query heads) at kept count ``count``."""
        if self.kind == "mlp":
            return sorted(self.order[0][:count])
        if self.kind == "kv_groups":
            g = self.heads_per_kv
            if count % g:
                raise ValueError(f"{count} query heads is not a whole number of key/value groups of {g}")
            return sorted(h for kv in self.order[0][: count // g] for h in range(kv * g, kv * g + g))
        n_kv = len(self.order)
        if count % n_kv:
            raise ValueError(f"{count} query heads cannot be split equally over {n_kv} key/value groups")
        return sorted(h for row in self.order for h in row[: count // n_kv])


def unit_orders(model: nn.Module, structure: LMStructure, space: SearchSpace, *, importance: str = "magnitude",
                calibration: torch.Tensor | None = None) -> dict[str, UnitOrder]:
    """The ranking of every group of ``space`` on the dense ``model``'s weights."""
    if importance not in IMPORTANCES:
        raise UserError(f"importance {importance!r} is unknown; choose one of {', '.join(IMPORTANCES)}.")
    norms: Mapping[str, torch.Tensor] = {}
    if importance == "activation":
        if calibration is None or calibration.ndim != 2 or calibration.numel() == 0:
            raise UserError("activation importance needs calibration token ids of shape (sequences, tokens).")
        norms = input_norms(model, structure, calibration)
    orders = {}
    with torch.no_grad():
        for group in space.groups:
            block_index, kind = parse_group_name(group.name)
            block = structure.blocks[block_index]
            if kind == "mlp":
                scores = _mlp_scores(model, structure, block, norms)
                orders[group.name] = UnitOrder(kind="mlp", order=(_ranking(scores),))
            else:
                q, kv = _attention_scores(model, structure, block, norms)
                orders[group.name] = _attention_order(block, q, kv, group_attention_mode(group))
    return orders


def _ranking(scores: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.argsort(scores.double(), descending=True, stable=True))


def _attention_order(block: BlockDims, q: torch.Tensor, kv: torch.Tensor, mode: str) -> UnitOrder:
    g = block.heads_per_kv
    per_group = q.reshape(block.num_kv_heads, g)
    if mode == "kv_groups":
        return UnitOrder(kind="kv_groups", order=(_ranking(per_group.sum(dim=1) + kv),), heads_per_kv=g)
    rows = tuple(tuple(j * g + h for h in _ranking(per_group[j])) for j in range(block.num_kv_heads))
    return UnitOrder(kind="heads", order=rows, heads_per_kv=g)


def _weigh(weight: torch.Tensor, norm: torch.Tensor | None, in_dim: int) -> torch.Tensor:
    """Per-weight score: ``w²`` (magnitude) or ``|w|·‖x_in‖`` (activation), ``in_dim`` the input axis."""
    if norm is None:
        return weight.double() ** 2
    shape = [1] * weight.ndim
    shape[in_dim] = -1
    return weight.double().abs() * norm.double().reshape(shape)


def _bias_score(bias: torch.Tensor | None, activation: bool) -> torch.Tensor | None:
    if bias is None:
        return None
    return bias.double().abs() if activation else bias.double() ** 2


def _rows(layer: nn.Module, norm: torch.Tensor | None) -> torch.Tensor:
    """Score of each output feature of a linear/Conv1D layer: its weights into that output, and its bias."""
    conv1d = not isinstance(layer, nn.Linear)  # Conv1D stores (in, out)
    score = _weigh(layer.weight, norm, in_dim=0 if conv1d else 1).sum(dim=0 if conv1d else 1)
    bias = _bias_score(layer.bias, norm is not None)
    return score if bias is None else score + bias


def _columns(layer: nn.Module, norm: torch.Tensor | None) -> torch.Tensor:
    """Score of each input feature of a linear/Conv1D layer: its weights out of that input."""
    conv1d = not isinstance(layer, nn.Linear)
    return _weigh(layer.weight, norm, in_dim=0 if conv1d else 1).sum(dim=1 if conv1d else 0)


def _per_head(scores: torch.Tensor, head_dim: int) -> torch.Tensor:
    return scores.reshape(-1, head_dim).sum(dim=1)


def _attention_scores(model: nn.Module, structure: LMStructure, block: BlockDims,
                      norms: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query head and per key/value head scores of one block's attention."""
    attn, d = model.get_submodule(block.attn), block.head_dim
    if structure.layout == "gpt2":
        rows = _rows(attn.c_attn, norms.get(f"{block.attn}.c_attn")).reshape(3, -1)
        q = _per_head(rows[0], d) + _per_head(_columns(attn.c_proj, norms.get(f"{block.attn}.c_proj")), d)
        return q, _per_head(rows[1] + rows[2], d)
    q = _per_head(_rows(attn.q_proj, norms.get(f"{block.attn}.q_proj")), d)
    q = q + _per_head(_columns(attn.o_proj, norms.get(f"{block.attn}.o_proj")), d)
    kv = _per_head(_rows(attn.k_proj, norms.get(f"{block.attn}.k_proj"))
                   + _rows(attn.v_proj, norms.get(f"{block.attn}.v_proj")), d)
    return q, kv


def _mlp_scores(model: nn.Module, structure: LMStructure, block: BlockDims,
                norms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    mlp = model.get_submodule(block.mlp)
    if structure.layout == "gpt2":
        return _rows(mlp.c_fc, norms.get(f"{block.mlp}.c_fc")) + _columns(mlp.c_proj, norms.get(f"{block.mlp}.c_proj"))
    return (_rows(mlp.gate_proj, norms.get(f"{block.mlp}.gate_proj"))
            + _rows(mlp.up_proj, norms.get(f"{block.mlp}.up_proj"))
            + _columns(mlp.down_proj, norms.get(f"{block.mlp}.down_proj")))


def _member_layers(structure: LMStructure) -> list[str]:
    names = []
    for block in structure.blocks:
        if structure.layout == "gpt2":
            names += [f"{block.attn}.c_attn", f"{block.attn}.c_proj", f"{block.mlp}.c_fc", f"{block.mlp}.c_proj"]
        else:
            names += [f"{block.attn}.{p}_proj" for p in ("q", "k", "v", "o")]
            names += [f"{block.mlp}.{p}_proj" for p in ("gate", "up", "down")]
    return names


def input_norms(model: nn.Module, structure: LMStructure, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """L2 norm of every input feature of every prunable projection over the calibration tokens."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name: str):
        def record(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
            x = inputs[0].detach().double()
            squares = x.reshape(-1, x.shape[-1]).pow(2).sum(dim=0)
            sums[name] = sums[name] + squares if name in sums else squares
        return record

    for name in _member_layers(structure):
        hooks.append(model.get_submodule(name).register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            for start in range(0, calibration.shape[0], CALIBRATION_BATCH):
                model(input_ids=calibration[start:start + CALIBRATION_BATCH], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return {name: total.sqrt() for name, total in sums.items()}
