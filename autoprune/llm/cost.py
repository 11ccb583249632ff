"""Exact FLOPs (MACs) and params of a causal LM as a function of the kept counts.

Per decoder block, with hidden size ``H``, head size ``d``, ``q`` kept query heads,
``kv`` kept key/value heads, ``f`` kept FFN neurons and ``T`` tokens:

- attention MACs: ``T·H·d·(q + 2·kv)`` for the query/key/value projections,
  ``T·d·q·H`` for the output projection, and ``2·T²·d·q`` for the score (``QKᵀ``) and
  value products of every query head over the full ``T × T`` matrix (the causal mask is
  not subtracted: attention kernels and ``torch.utils.flop_counter`` count the full
  product, and so does the literature's ``2·n_layer·n_ctx·d_attn``);
- MLP MACs: ``3·T·H·f`` (gate, up, down) or ``2·T·H·f`` for GPT-2 (fc, proj);
- the language-model head: ``T·H·vocab``; embeddings are lookups (no MACs); bias
  additions, normalisations, rotary embeddings, activations and softmax are not MACs.

Params are every weight and bias, a tied embedding once. ``params`` of the space is
either the non-embedding count (default, as the scaling-law literature counts a model:
without the token and position embeddings and without the output head, which is the
token embedding itself when tied) or the total (``params_with_embeddings=True``).

In ``kv_groups`` mode the key/value heads shrink with the query heads (``kv = q / g``
for ``g`` query heads per key/value head), which is why the cost carries a denominator;
in ``heads`` mode they stay whole while the block is present. A block removed entirely
(kept count 0) loses its fixed parts too: its normalisation, the output bias and, in
``heads`` mode, the key/value projections; that is the presence term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoprune.llm.structure import BlockDims, LMStructure
from autoprune.space.cost import QuadraticCost

ATTENTION_MODES = ("kv_groups", "heads")


def block_attention_mode(block: BlockDims, mode: str) -> str:
    """The mode that applies to ``block``: without GQA a query head has its own key/value
    head, so removing a head removes that key/value head too (``kv_groups``) in either mode."""
    return "kv_groups" if block.heads_per_kv == 1 else mode


@dataclass(frozen=True)
class BlockGroups:
    """The space's group index of a block's attention and MLP (None: never pruned)."""

    attn: int | None
    mlp: int | None


@dataclass
class _Part:
    """One sub-block's cost: ``per_unit`` per kept count, ``fixed`` while present (both x D)."""

    flops_per_unit: int
    flops_fixed: int
    params_per_unit: int
    params_fixed: int


def build_costs(structure: LMStructure, groups: list[BlockGroups], *, n_groups: int, seq_len: int,
                attention_mode: str, params_with_embeddings: bool) -> tuple[QuadraticCost, QuadraticCost]:
    """FLOPs and params cost forms over ``n_groups`` kept counts (query heads, FFN neurons)."""
    if attention_mode not in ATTENTION_MODES:
        raise ValueError(f"attention_mode must be one of {ATTENTION_MODES}, got {attention_mode!r}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    denominator = 1
    if attention_mode == "kv_groups":
        denominator = math.lcm(*(b.heads_per_kv for b in structure.blocks)) if structure.blocks else 1
    flops = QuadraticCost(n_groups=n_groups, denominator=denominator)
    params = QuadraticCost(n_groups=n_groups, denominator=denominator)
    for block, owner in zip(structure.blocks, groups):
        attn = (_gpt2_attention(block, structure.hidden_size, seq_len, denominator) if structure.layout == "gpt2"
                else _attention(block, structure.hidden_size, seq_len, block_attention_mode(block, attention_mode),
                                denominator))
        mlp = _mlp(block, structure.hidden_size, seq_len, structure.layout, denominator)
        _add(flops, params, attn, owner.attn, block.num_heads)
        _add(flops, params, mlp, owner.mlp, block.intermediate)
    head = structure.hidden_size * structure.vocab_size
    flops.constant += denominator * seq_len * head
    params.constant += denominator * outside_block_params(structure, with_embeddings=params_with_embeddings)
    return flops, params


def outside_block_params(structure: LMStructure, *, with_embeddings: bool) -> int:
    """Params outside the decoder blocks: the final norm, and embeddings and head if asked."""
    hidden, vocab = structure.hidden_size, structure.vocab_size
    total = structure.final_norm_params
    if with_embeddings:
        total += vocab * hidden + structure.position_embedding_params
        total += structure.lm_head_bias + (0 if structure.tied else vocab * hidden)
    return total


def _add(flops: QuadraticCost, params: QuadraticCost, part: _Part, group: int | None, dense: int) -> None:
    if group is None:  # never pruned: the dense block is a constant
        flops.constant += part.flops_per_unit * dense + part.flops_fixed
        params.constant += part.params_per_unit * dense + part.params_fixed
        return
    flops.linear[group] += part.flops_per_unit
    params.linear[group] += part.params_per_unit
    flops.add_presence(group, part.flops_fixed)
    params.add_presence(group, part.params_fixed)


def _attention(block: BlockDims, hidden: int, seq_len: int, mode: str, denominator: int) -> _Part:
    """A Llama-layout attention: per kept query head, and fixed, scaled by ``denominator``."""
    d, g, bias = block.head_dim, block.heads_per_kv, block.attn_bias
    q_head = hidden * d + (d if "q_proj" in bias else 0)
    kv_head = 2 * (hidden * d + (d if "k_proj" in bias else 0))  # key and value
    o_head = d * hidden
    per_unit_flops = seq_len * (hidden * d + d * hidden) + 2 * seq_len * seq_len * d
    per_unit_params = q_head + o_head
    fixed_params = block.attn_norm_params + (hidden if "o_proj" in bias else 0)
    if mode == "kv_groups":  # kv = q / g
        per_unit_flops = denominator * per_unit_flops + (denominator // g) * seq_len * 2 * hidden * d
        per_unit_params = denominator * per_unit_params + (denominator // g) * kv_head
        return _Part(per_unit_flops, 0, per_unit_params, denominator * fixed_params)
    fixed_flops = seq_len * 2 * hidden * d * block.num_kv_heads
    fixed_params += kv_head * block.num_kv_heads
    return _Part(denominator * per_unit_flops, denominator * fixed_flops,
                 denominator * per_unit_params, denominator * fixed_params)


def _gpt2_attention(block: BlockDims, hidden: int, seq_len: int, denominator: int) -> _Part:
    """GPT-2's fused attention: every query head has its own key and value head."""
    d = block.head_dim
    per_head_params = hidden * 3 * d + (3 * d if "c_attn" in block.attn_bias else 0) + d * hidden
    per_head_flops = seq_len * (hidden * 3 * d + d * hidden) + 2 * seq_len * seq_len * d
    fixed_params = block.attn_norm_params + (hidden if "c_proj" in block.attn_bias else 0)
    return _Part(denominator * per_head_flops, 0, denominator * per_head_params, denominator * fixed_params)


def _mlp(block: BlockDims, hidden: int, seq_len: int, layout: str, denominator: int) -> _Part:
    bias = block.mlp_bias
    if layout == "gpt2":
        per_neuron_params = 2 * hidden + (1 if "c_fc" in bias else 0)
        per_neuron_flops = 2 * seq_len * hidden
        fixed_params = block.mlp_norm_params + (hidden if "c_proj" in bias else 0)
    else:
        per_neuron_params = 3 * hidden + (1 if "gate_proj" in bias else 0) + (1 if "up_proj" in bias else 0)
        per_neuron_flops = 3 * seq_len * hidden
        fixed_params = block.mlp_norm_params + (hidden if "down_proj" in bias else 0)
    return _Part(denominator * per_neuron_flops, 0, denominator * per_neuron_params, denominator * fixed_params)
