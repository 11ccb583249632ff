"""A language model's stages and feature distortion, for ``emo-pms`` on transformers.

A decoder-only LM has no change of resolution or width to divide at (the hidden size is
never pruned), but every decoder block is a cut: the residual stream it returns is all the
blocks after it read. So its stages are runs of blocks:

- one stage per block that owns a group of the space (``layers.<i>.attn`` and
  ``layers.<i>.mlp``), ending at the output of the last block before the next owning
  block (blocks kept whole by ``never_prune`` join the stage before them; any before the
  first owning block belong to the first stage); the last stage ends at the model's
  output, which here is the last hidden state after the final normalisation (the output
  layer is never pruned, so the logits follow from it, at a fraction of their size);
- no boundary carries a pruned group: every boundary's features have the dense width.

``emo-pms`` merges these into ``sub_networks`` runs with group counts as even as possible
(:meth:`~autoprune.space.stage_split.StageSplit.merged`), so with the default of 3 a
30-block model divides into three runs of 10 blocks. The distortion itself, and the
feature-mimicking training, are :class:`~autoprune.evaluation.features.FeatureDistortion`'s,
fed token batches here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from autoprune.evaluation.features import FeatureDistortion, FeatureInputs
from autoprune.llm.space import parse_group_name
from autoprune.llm.structure import LMStructure
from autoprune.llm.text_data import TokenData
from autoprune.space.search_space import SearchSpace
from autoprune.space.stage_split import OUTPUT, StageSplit


def lm_stage_split(structure: LMStructure, space: SearchSpace) -> StageSplit | None:
    """One stage per decoder block that owns a group (see the module docstring); None when
    fewer than two blocks own groups (nothing to divide)."""
    block_of = [parse_group_name(g.name)[0] for g in space.groups]
    owning = sorted(set(block_of))
    if len(owning) < 2:
        return None
    ends = [structure.blocks[nxt - 1].path for nxt in owning[1:]]
    return StageSplit(boundaries=(*ends, OUTPUT), owner=tuple(owning.index(b) for b in block_of),
                      carried=(None,) * len(owning))


def last_hidden_state(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The hidden states the output layer reads: ``(B, T, hidden)`` after the final norm."""
    return model.base_model(input_ids=tokens, use_cache=False).last_hidden_state


def lm_feature_distortion(*, dense: nn.Module, data: TokenData, space: SearchSpace, structure: LMStructure,
                          device: str, batch_size: int) -> FeatureDistortion | None:
    """The distortion of pruned LMs against ``dense`` (on ``device``) at the block stages
    of ``space``, held-out sequences in batches of ``batch_size``; None when the space
    has fewer than two stages."""
    split = lm_stage_split(structure, space)
    if split is None:
        return None

    def val_batches(limit: int | None) -> Iterator[torch.Tensor]:
        n = len(data.val) if limit is None else max(1, min(limit, len(data.val)))
        for start in range(0, n, batch_size):
            yield data.val[start: min(n, start + batch_size)].to(device)

    inputs = FeatureInputs(val_batches=val_batches, train_batch=lambda idx: data.train[idx].to(device),
                           n_train=len(data.train), output=last_hidden_state)
    return FeatureDistortion(dense=dense, split=split, space=space, inputs=inputs)
