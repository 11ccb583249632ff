"""Per-channel importance of every group with Torch-Pruning's importance classes.

What a Torch-Pruning user ranks channels by with ``global_pruning=True``: the ``global``
searcher (which imports no torch) receives these scores through ``Problem.channel_scores``
and makes the global cut itself, under autoprune's exact budgets.

- ``magnitude``: ``tp.importance.GroupMagnitudeImportance(p=2)``, the L2 norm of each
  channel's weights over every layer of its group;
- ``taylor``: ``tp.importance.GroupTaylorImportance()``, ``|w · dL/dw|`` over the group,
  after one backward pass of the cross-entropy on a calibration batch of training data;
- ``bn_scale``: ``tp.importance.BNScaleImportance()``, the BatchNorm scale of each channel
  (Network Slimming); a group without BatchNorm falls back to magnitude, with a warning.

Each criterion keeps Torch-Pruning's default ``normalizer="mean"`` (a group's scores divided
by their mean), which is what makes scores of different groups comparable in its global
ranking. Scores are computed on a deep copy of the dense model; the model is not changed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from autoprune.data.base import TaskData
from autoprune.space.graph import trace_groups
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

#: Torch-Pruning's importance class for each criterion the ``global`` searcher names
CRITERIA: dict[str, Callable[[], Callable[[tp.Group], torch.Tensor]]] = {
    "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
}
#: training samples of the Taylor criterion's backward pass
TAYLOR_SAMPLES = 256


def channel_scores(dense: nn.Module, data: TaskData, space: SearchSpace, *, never_prune: list[str], kind: str,
                   calibration_samples: int = TAYLOR_SAMPLES) -> list[np.ndarray]:
    """One array of per-channel scores per group of ``space`` (in its order), by ``kind``."""
    if kind not in CRITERIA:
        raise ValueError(f"unknown importance {kind!r}; known: {', '.join(CRITERIA)}")
    model = copy.deepcopy(dense).cpu().float()
    example = data.example_input(1)
    traced = trace_groups(model, example, never_prune=never_prune)
    if list(traced.groups) != space.group_names:
        raise ValueError("the model's prunable groups differ from the search space's")
    if kind == "taylor":
        model.zero_grad()
        model.eval()  # BatchNorm in inference mode: the gradients of the model as it is
        n = min(calibration_samples, len(data.train))
        x = data.normalize(data.train.x[:n])
        loss = F.cross_entropy(model(x), data.train.y[:n])
        loss.backward()
    criterion = CRITERIA[kind]()
    fallback = CRITERIA["magnitude"]()
    out = []
    with torch.no_grad():
        for name, group in traced.groups.items():
            values = criterion(group)
            if values is None:  # e.g. BN scale of a group with no BatchNorm
                logger.warning("global: group %s has no %s importance; its magnitude is used", name, kind)
                values = fallback(group)
            out.append(values.detach().cpu().double().numpy())
    return out


def channel_scores_provider(dense: nn.Module, data: TaskData, space: SearchSpace, *,
                            never_prune: list[str]) -> Callable[[str], list[np.ndarray]]:
    """``Problem.channel_scores`` for an image model: scores by criterion, computed once each."""
    cache: dict[str, list[np.ndarray]] = {}

    def scores(kind: str) -> list[np.ndarray]:
        if kind not in cache:
            cache[kind] = channel_scores(dense, data, space, never_prune=never_prune, kind=kind)
        return [v.copy() for v in cache[kind]]

    return scores
