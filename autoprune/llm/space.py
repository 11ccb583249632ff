"""The search space of a causal LM: attention heads and FFN neurons per block, and depth.

Every decoder block ``i`` gives two groups:

- ``layers.{i}.attn``: kept count = query heads. With grouped-query attention two modes
  keep ``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` consistent:

  - ``kv_groups`` (default): a step removes one whole key/value head together with the
    query heads that read it. Keys, values and their cache shrink with the queries, so a
    removed head saves the most compute and memory, and every kept query head still reads
    the key/value head it was trained with.
  - ``heads``: a step removes one query head inside *every* key/value group, so each
    group keeps the same number of query heads; the key/value projections stay whole.

  Without GQA (GPT-2) both are the same: a step is one head.
- ``layers.{i}.mlp``: kept count = FFN neurons (gate, up and down projections coupled).

All groups share the level grid's number of levels. Level ``l`` keeps about
``keep_ratios[l]`` of a group's units (heads are rounded to whole units, neurons follow
the grid's rounding), so within a group kind every level step removes the same number
of parameters, as Týr-the-Pruner and EvoPress lay out their databases, and a swap of one
step up and one down between two blocks keeps the budget. Coarse units give plateaus
(several levels with one kept count), which the searchers skip. With
``remove_blocks`` (default) the grid's last level removes the sub-block entirely (kept
count 0, its normalisation included), so the search can trade width for depth as
EvoPress and Minitron's depth pruning do. The hidden size is never pruned.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from autoprune.errors import UserError
from autoprune.llm.cost import ATTENTION_MODES, BlockGroups, block_attention_mode, build_costs
from autoprune.llm.structure import BlockDims, LMStructure, find_structure
from autoprune.space.levels import LevelGrid
from autoprune.space.search_space import Group, SearchSpace

logger = logging.getLogger(__name__)

DEFAULT_ATTENTION_MODE = "kv_groups"
KINDS = ("attn", "mlp")


def group_name(block: int, kind: str) -> str:
    """The space's name of block ``block``'s attention (``attn``) or MLP (``mlp``) group."""
    return f"layers.{block}.{kind}"


def parse_group_name(name: str) -> tuple[int, str]:
    """``(block index, kind)`` of a group name made by :func:`group_name`."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in KINDS:
        raise ValueError(f"{name!r} is not a language-model group name (layers.<i>.attn or layers.<i>.mlp)")
    return int(parts[1]), parts[2]


def build_lm_space(model: nn.Module, *, grid: LevelGrid, seq_len: int, attention_mode: str = DEFAULT_ATTENTION_MODE,
                   remove_blocks: bool = True, params_with_embeddings: bool = False,
                   never_prune: Sequence[str] = ()) -> SearchSpace:
    """The search space of the dense causal LM ``model`` priced at ``seq_len`` tokens.

    ``params`` counts non-embedding parameters unless ``params_with_embeddings``;
    ``never_prune`` holds glob patterns over group names (``layers.0.*``) kept dense."""
    if attention_mode not in ATTENTION_MODES:
        raise UserError(f"attention mode {attention_mode!r} is unknown; choose one of {', '.join(ATTENTION_MODES)}.")
    structure = find_structure(model)
    _check_seq_len(model, seq_len)
    excluded = _excluded([group_name(b.index, kind) for b in structure.blocks for kind in KINDS], never_prune)
    groups: list[Group] = []
    owners: list[BlockGroups] = []
    for block in structure.blocks:
        index = {}
        for kind in KINDS:
            name = group_name(block.index, kind)
            if name in excluded:
                index[kind] = None
                continue
            index[kind] = len(groups)
            groups.append(_group(structure, block, kind, grid, attention_mode, remove_blocks))
        owners.append(BlockGroups(attn=index["attn"], mlp=index["mlp"]))
    if not groups:
        raise UserError("never_prune excludes every attention and MLP block; nothing is left to prune.")
    flops, params = build_costs(structure, owners, n_groups=len(groups), seq_len=seq_len,
                                attention_mode=attention_mode, params_with_embeddings=params_with_embeddings)
    return SearchSpace(groups=groups, grid=grid, flops=flops, params=params)


def _check_seq_len(model: nn.Module, seq_len: int) -> None:
    if not isinstance(seq_len, int) or seq_len < 1:
        raise UserError(f"the sequence length must be a positive integer, got {seq_len!r}.")
    config = model.config
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context is not None and seq_len > int(context):
        raise UserError(f"sequence length {seq_len} is beyond the model's context of {context} tokens; "
                        "choose a shorter --seq-len.")


def _excluded(names: list[str], patterns: Sequence[str]) -> set[str]:
    excluded: set[str] = set()
    for pattern in patterns:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hit:
            raise UserError(f"never_prune pattern {pattern!r} names no group; groups are layers.<i>.attn "
                            "and layers.<i>.mlp.")
        excluded.update(hit)
    return excluded


def _group(structure: LMStructure, block: BlockDims, kind: str, grid: LevelGrid, mode: str,
           remove_blocks: bool) -> Group:
    name = group_name(block.index, kind)
    if kind == "mlp":
        kept = list(grid.kept(block.intermediate))
        size = block.intermediate
        members = ("gate_proj", "up_proj", "down_proj") if structure.layout == "llama" else ("c_fc", "c_proj")
        paths = [f"{block.mlp}.{m}" for m in members]
        norm = block.mlp_norm
    else:
        size = block.num_heads
        mode = block_attention_mode(block, mode)
        if mode == "kv_groups":
            n_units, unit = block.num_kv_heads, block.heads_per_kv
        else:
            n_units, unit = block.heads_per_kv, block.num_kv_heads
        kept = [unit * min(n_units, max(1, math.floor(r * n_units + 0.5))) for r in grid.keep_ratios]
        if structure.layout == "gpt2":
            members = ("c_attn", "c_proj")
        else:
            members = ("q_proj", "k_proj", "v_proj", "o_proj") if mode == "kv_groups" else ("q_proj", "o_proj")
        paths = [f"{block.attn}.{m}" for m in members]
        norm = block.attn_norm
    if remove_blocks:
        kept[-1] = 0
        paths.append(norm)
    return Group(name=name, size=size, kept=tuple(kept), members=tuple(paths))


def group_attention_mode(group: Group) -> str:
    """The attention mode of an attention group, read from its members.

    ``heads`` mode leaves the key projection out of the members (keys and values stay
    whole); a fused GPT-2 attention, or any block without GQA, is ``kv_groups``."""
    separate = any(m.endswith(".q_proj") for m in group.members)
    return "heads" if separate and not any(m.endswith(".k_proj") for m in group.members) else "kv_groups"


def removes_every_block(space: SearchSpace, levels: np.ndarray) -> np.ndarray:
    """Per candidate: whether every decoder block's attention and MLP are removed.

    Always false where some block is never pruned or blocks are not removable."""
    kept = np.atleast_2d(space.kept_counts(levels))
    n_blocks = len({parse_group_name(g.name)[0] for g in space.groups})
    complete = len(space.groups) == 2 * n_blocks and _all_blocks_named(space, n_blocks)
    return (kept == 0).all(axis=1) & complete


def _all_blocks_named(space: SearchSpace, n_blocks: int) -> bool:
    return {g.name for g in space.groups} == {group_name(b, k) for b in range(n_blocks) for k in KINDS}


def check_keeps_a_block(space: SearchSpace, limits: Mapping[str, float], latency_model: Any = None) -> None:
    """Refuse absolute ``limits`` (resource -> bound) that only a model without blocks meets.

    Costs rise with kept counts, so the cheapest candidates that keep a block keep one
    group at its smallest non-zero count and remove everything else; if none of them
    meets every limit, no candidate keeping a block does."""
    sparsest = space.sparsest_candidate()
    if not removes_every_block(space, sparsest)[0]:
        return
    kept = np.array([g.kept for g in space.groups], dtype=np.int64)
    candidates = []
    for g in range(space.n_groups):
        nonzero = np.flatnonzero(kept[g] > 0)
        if nonzero.size:
            levels = sparsest.copy()
            levels[g] = nonzero[-1]
            candidates.append(levels)
    if not candidates:
        return
    rows = np.array(candidates)
    fits = np.ones(len(rows), dtype=bool)
    used = {r: space.cost(r, rows) for r in limits if r in space.costs}
    if "latency" in limits and latency_model is not None:
        used["latency"] = latency_model.predict(rows)
    for resource, values in used.items():
        fits &= values <= limits[resource]
    if fits.any():
        return
    dense = dict(space.dense)
    if "latency" in used:
        dense["latency"] = float(latency_model.predict(space.dense_candidate())[0])
    shown = {r: f"{v.min():.3f} ms predicted" if r == "latency" else f"{int(v.min()):,}" for r, v in used.items()}
    smallest = ", ".join(f"{r}={v.min() / dense[r]:.4f} ({shown[r]})" for r, v in used.items())
    raise UserError(f"the budget leaves room for no attention or MLP block at all; keeping a single block "
                    f"needs at least {smallest}, so raise the budget.")
