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

Feature mimicking trains only the decoder blocks of the stages it trains (blocks before
the first owning block count with the first stage): the embeddings, the final norm and
the output layer (often the embedding itself, tied) stay dense, so every stage is
measured against the same untouched input and output. With ``norms_and_biases_only``
(PERP, ``--train-params norms-and-biases``) only those blocks' norms and biases learn.

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


def stage_blocks(structure: LMStructure, split: StageSplit, stage: int) -> range:
    """The decoder blocks stage ``stage`` of ``split`` (from :func:`lm_stage_split`, merged
    or not) runs: from the block after the previous boundary to its own boundary's block
    (the last stage: to the last block)."""
    index = {block.path: block.index for block in structure.blocks}
    ends = [index[b] for b in split.boundaries[:-1]] + [structure.n_layers - 1]
    start = 0 if stage == 0 else ends[stage - 1] + 1
    return range(start, ends[stage] + 1)


def learnable_blocks(structure: LMStructure, *, norms_and_biases_only: bool = False):  # noqa: ANN201
    """``FeatureInputs.learnable`` for a language model: the parameters of the stages'
    decoder blocks (only their norms and biases with ``norms_and_biases_only``)."""

    def learnable(model: nn.Module, split: StageSplit, stages: list[int]) -> list[nn.Parameter]:
        chosen: list[nn.Parameter] = []
        for stage in stages:
            for b in stage_blocks(structure, split, stage):
                block = model.get_submodule(structure.blocks[b].path)
                for module in block.modules():
                    is_norm = "norm" in type(module).__name__.lower()
                    chosen += [p for name, p in module.named_parameters(recurse=False)
                               if not norms_and_biases_only or is_norm or name == "bias"]
        return chosen

    return learnable


def last_hidden_state(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The hidden states the output layer reads: ``(B, T, hidden)`` after the final norm."""
    return model.base_model(input_ids=tokens, use_cache=False).last_hidden_state


def lm_feature_distortion(*, dense: nn.Module, data: TokenData, space: SearchSpace, structure: LMStructure,
                          device: str, batch_size: int, sub_networks: int | None = None,
                          norms_and_biases_only: bool = False) -> FeatureDistortion | None:
    """The distortion of pruned LMs against ``dense`` (on ``device``) at the block stages
    of ``space`` (merged into ``sub_networks`` runs when given), held-out sequences in
    batches of ``batch_size``; None when the space has fewer than two stages."""
    split = lm_stage_split(structure, space)
    if split is None:
        return None
    if sub_networks is not None:
        split = split.merged(min(sub_networks, split.n_stages))

    def val_batches(limit: int | None) -> Iterator[torch.Tensor]:
        n = len(data.val) if limit is None else max(1, min(limit, len(data.val)))
        for start in range(0, n, batch_size):
            yield data.val[start: min(n, start + batch_size)].to(device)

    inputs = FeatureInputs(val_batches=val_batches, train_batch=lambda idx: data.train[idx].to(device),
                           n_train=len(data.train), output=last_hidden_state,
                           learnable=learnable_blocks(structure, norms_and_biases_only=norms_and_biases_only))
    return FeatureDistortion(dense=dense, split=split, space=space, inputs=inputs)
