"""Feature distortion at stage boundaries: how well a pruned network reproduces the dense
network's features where each stage ends.

At every boundary of the model's :class:`~autoprune.space.stage_split.StageSplit` (and at
its output, the logits), the pruned and the dense model run on the same held-out samples
and their features there are compared as a normalised mean squared error,

    ``sum((pruned - dense)**2) / sum((dense - mean(dense))**2)``,

the error relative to the dense features' variance (0: reproduced exactly; 1: no better
than their mean). A boundary narrowed by pruning (its carried group pruned) is compared
channel by channel at the positions its group keeps, the removed channels as zeros, so
what the dropped channels carried counts as lost.

EMO-PMS reads the metric of one stage from a candidate pruned only inside that stage:
every stage before it is dense, so it reads exactly the dense features, which is the
paper's condition that each pruned sub-network must process the dense output of the one
before it. Reported as ``feature_distortion:<boundary>`` metrics (``output`` for the logits).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.data.base import TaskData
from autoprune.evaluation.training import Placement
from autoprune.space.search_space import SearchSpace
from autoprune.space.stage_split import OUTPUT, StageSplit
from autoprune.space.stages import find_stages

logger = logging.getLogger(__name__)

#: the prefix of the metrics this module reports, followed by the boundary's name
METRIC_PREFIX = "feature_distortion:"
BATCH_SIZE = 256


def metric_name(boundary: str) -> str:
    return f"{METRIC_PREFIX}{boundary}"


@dataclass
class _Sums:
    squared_error: float = 0.0
    total: float = 0.0
    total_squared: float = 0.0
    count: int = 0

    def add(self, pruned: torch.Tensor, dense: torch.Tensor) -> None:
        self.squared_error += float((pruned - dense).double().pow(2).sum())
        self.total += float(dense.double().sum())
        self.total_squared += float(dense.double().pow(2).sum())
        self.count += dense.numel()

    def value(self) -> float:
        variance_sum = self.total_squared - self.total ** 2 / max(self.count, 1)
        return self.squared_error / variance_sum if variance_sum > 0 else float("inf")


class FeatureDistortion:
    """Measures ``feature_distortion:<boundary>`` of pruned models against one dense model."""

    def __init__(self, *, dense: nn.Module, data: TaskData, space: SearchSpace, placement: Placement) -> None:
        """``dense`` is the dense model already on the placement's device (the evaluator's
        teacher: hooks are added to it only while measuring)."""
        self.data = data
        self.space = space
        self.placement = placement
        self.split: StageSplit | None = find_stages(dense, data.example_input(1), space)
        if self.split is None:
            logger.warning("feature distortion: the model has no stage boundaries; only the output is compared")
            self.split = StageSplit(boundaries=(OUTPUT,), owner=(0,) * space.n_groups, carried=(None,))
        self._dense = dense.eval()

    def measure(self, model: nn.Module, keep: dict[str, list[int]], *, limit: int | None) -> dict[str, float]:
        """The distortion of ``model`` (on the placement's device; kept indices ``keep`` per
        group) at every boundary, on the first ``limit`` held-out samples (None: all)."""
        assert self.split is not None
        split = self.data.val
        n = len(split) if limit is None else min(limit, len(split))
        sums = {b: _Sums() for b in self.split.boundaries}
        model.eval()
        with torch.no_grad():
            for start in range(0, n, BATCH_SIZE):
                x = self.placement.batch(self.data, split.x[start: min(n, start + BATCH_SIZE)])
                dense = self._features(self._dense, x)
                pruned = self._features(model, x)
                for s, boundary in enumerate(self.split.boundaries):
                    sums[boundary].add(self._widen(pruned[boundary], dense[boundary], s, keep), dense[boundary])
        return {metric_name(b): sums[b].value() for b in self.split.boundaries}

    def _features(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.split is not None
        modules = dict(model.named_modules())
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for boundary in self.split.boundaries[:-1]:
            def hook(_m: nn.Module, _i: object, output: torch.Tensor, name: str = boundary) -> None:
                captured[name] = output.detach().float().clone()
            handles.append(modules[boundary].register_forward_hook(hook))
        try:
            with self.placement.autocast():
                captured[OUTPUT] = model(x).detach().float()
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _widen(self, pruned: torch.Tensor, dense: torch.Tensor, stage: int, keep: dict[str, list[int]]) -> torch.Tensor:
        """``pruned`` at the dense width: its channels at the positions the carried group keeps."""
        if pruned.shape == dense.shape:
            return pruned
        assert self.split is not None
        carried = self.split.carried[stage]
        kept = keep.get(self.space.groups[carried].name) if carried is not None else None
        if kept is None or len(kept) != pruned.shape[1] or pruned.shape[2:] != dense.shape[2:]:
            raise ValueError(f"the features at {self.split.boundaries[stage]} have shape {tuple(pruned.shape)}, "
                             f"the dense model's {tuple(dense.shape)}, and no group says which channels remain")
        wide = torch.zeros_like(dense)
        wide[:, torch.as_tensor(kept, device=dense.device)] = pruned
        return wide
