"""Feature distortion at stage boundaries: how well a pruned network reproduces the dense
network's features where each stage ends.

At every boundary of the model's :class:`~autoprune.space.stage_split.StageSplit` (and at
its output: an image model's logits, a language model's last hidden state), the pruned
and the dense model run on the same held-out samples and their features there are
compared as a normalised mean squared error,

    ``sum((pruned - dense)**2) / sum((dense - mean(dense))**2)``,

the error relative to the dense features' variance (0: reproduced exactly; 1: no better
than their mean). A boundary narrowed by pruning (its carried group pruned) is compared
channel by channel at the positions its group keeps, the removed channels as zeros, so
what the dropped channels carried counts as lost.

EMO-PMS reads the metric of one stage from a candidate pruned only inside that stage:
every stage before it is dense, so it reads exactly the dense features, which is the
paper's condition that each pruned sub-network must process the dense output of the one
before it. Reported as ``feature_distortion:<boundary>`` metrics (``output`` for the output).

The measurement is the same for every model family; :class:`FeatureInputs` says how a
family's batches are made and what its output is (images: :meth:`FeatureDistortion.for_images`
with stages found by :mod:`autoprune.space.stages`; language models:
:mod:`autoprune.llm.features`, whose stages are runs of decoder blocks). A boundary module
may return a tuple (a transformer block): its first element is the features.

:meth:`FeatureDistortion.mimic` is the paper's optional feature-mimicking training: a few
steps in which the pruned stages learn to reproduce the dense features at their own
boundaries, the same normalised error as the loss. Only the pruned stages learn: the
features entering the first of them are detached (the stages before stay exactly dense)
and the forward pass stops at the last one's boundary (the stages after are untouched).
The model stays in eval mode, so BatchNorm normalises with the statistics recalibrated
for the pruned model, and no running statistics move while it learns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprune.data.base import TaskData
from autoprune.evaluation.training import Placement, TrainConfig, TrainOutcome, batch_indices, lr_at
from autoprune.space.search_space import SearchSpace
from autoprune.space.stage_split import OUTPUT, StageSplit
from autoprune.space.stages import find_stages

logger = logging.getLogger(__name__)

#: the prefix of the metrics this module reports, followed by the boundary's name
METRIC_PREFIX = "feature_distortion:"
BATCH_SIZE = 256
#: Adam's learning rate for feature mimicking (warm-up and cosine as in retraining). The
#: error is normalised by the features' variance, but its gradients still differ in scale
#: from a classification loss (SGD at the retraining rate diverged on the digits network);
#: Adam's steps do not depend on that scale.
MIMIC_LR = 1e-3


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


@dataclass(frozen=True)
class FeatureInputs:
    """How a model family feeds :class:`FeatureDistortion`: its batches and its output.

    ``val_batches(limit)`` yields the first ``limit`` held-out inputs (all when None) in
    batches, on the device; ``train_batch(indices)`` the training inputs at ``indices``
    (of ``n_train``); ``output(model, x)`` the tensor compared at the :data:`OUTPUT`
    boundary (a classifier's logits; a language model's last hidden state);
    ``autocast()`` the precision context the forward passes run in; ``learnable(model,
    split, stages)`` the parameters feature mimicking may change when ``stages`` of
    ``split`` learn (None: every parameter the loss reaches, which for an image model are
    those of the stages themselves)."""

    val_batches: Callable[[int | None], Iterator[torch.Tensor]]
    train_batch: Callable[[torch.Tensor], torch.Tensor]
    n_train: int
    output: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    autocast: Callable[[], AbstractContextManager] = nullcontext
    learnable: Callable[[nn.Module, StageSplit, list[int]], list[nn.Parameter]] | None = None


class FeatureDistortion:
    """Measures ``feature_distortion:<boundary>`` of pruned models against one dense model."""

    def __init__(self, *, dense: nn.Module, split: StageSplit, space: SearchSpace, inputs: FeatureInputs) -> None:
        """``dense`` is the dense model already on the inputs' device (the evaluator's
        teacher: hooks are added to it only while measuring)."""
        self.split = split
        self.space = space
        self.inputs = inputs
        self._dense = dense.eval()

    @classmethod
    def for_images(cls, *, dense: nn.Module, data: TaskData, space: SearchSpace, placement: Placement,
                   sub_networks: int | None = None) -> "FeatureDistortion":
        """An image model's distortion at the stages :func:`~autoprune.space.stages.find_stages`
        finds (only the logits when it finds none), merged into ``sub_networks`` runs of
        consecutive stages when given."""
        split = find_stages(dense, data.example_input(1), space)
        if split is None:
            logger.warning("feature distortion: the model has no stage boundaries; only the output is compared")
            split = StageSplit(boundaries=(OUTPUT,), owner=(0,) * space.n_groups, carried=(None,))
        elif sub_networks is not None:
            split = split.merged(min(sub_networks, split.n_stages))

        def val_batches(limit: int | None) -> Iterator[torch.Tensor]:
            n = len(data.val) if limit is None else min(limit, len(data.val))
            for start in range(0, n, BATCH_SIZE):
                yield placement.batch(data, data.val.x[start: min(n, start + BATCH_SIZE)])

        inputs = FeatureInputs(val_batches=val_batches,
                               train_batch=lambda idx: placement.batch(data, data.train.x[idx]),
                               n_train=len(data.train), output=lambda model, x: model(x), autocast=placement.autocast)
        return cls(dense=dense, split=split, space=space, inputs=inputs)

    def measure(self, model: nn.Module, keep: dict[str, list[int]], *, limit: int | None) -> dict[str, float]:
        """The distortion of ``model`` (on the inputs' device; kept indices ``keep`` per
        group) at every boundary, on the first ``limit`` held-out samples (None: all)."""
        sums = {b: _Sums() for b in self.split.boundaries}
        model.eval()
        with torch.no_grad():
            for x in self.inputs.val_batches(limit):
                dense = self._features(self._dense, x)
                pruned = self._features(model, x)
                for s, boundary in enumerate(self.split.boundaries):
                    sums[boundary].add(self._widen(pruned[boundary], dense[boundary], s, keep), dense[boundary])
        return {metric_name(b): sums[b].value() for b in self.split.boundaries}

    def mimic(self, model: nn.Module, keep: dict[str, list[int]], *, steps: int, batch_size: int,
              warmup_fraction: float, seed: int, lr: float = MIMIC_LR,
              max_grad_norm: float | None = None) -> TrainOutcome:
        """Train the stages that ``keep`` prunes for ``steps`` mini-batches of ``batch_size``
        (Adam at ``lr``, warmed up over ``warmup_fraction`` of the steps, then cosine;
        gradients clipped to ``max_grad_norm`` when given) to reproduce the dense model's
        features at their boundaries (see the module docstring). Only the inputs'
        ``learnable`` parameters change. Nothing to learn, and no step taken, when no group
        is pruned or the pruned stages have no learnable parameter left that their features
        depend on (a language model's block whose attention and MLP are both removed)."""
        pruned = sorted({self.split.owner[g] for g, group in enumerate(self.space.groups)
                         if len(keep.get(group.name, range(group.size))) < group.size})
        if steps <= 0 or not pruned:
            return TrainOutcome(steps=0, samples=0, final_loss=float("nan"), diverged=False)
        first, last = pruned[0], pruned[-1]
        targets = list(range(first, last + 1))
        learnable = (list(model.parameters()) if self.inputs.learnable is None
                     else self.inputs.learnable(model, self.split, targets))
        chosen = {id(p) for p in learnable}
        before = [(p, p.requires_grad) for p in model.parameters()]
        for p in model.parameters():  # the rest is frozen: no gradient reaches it, none is computed for it
            p.requires_grad_(id(p) in chosen)
        try:
            return self._mimic(model, keep, learnable, steps=steps, first=first, last=last, targets=targets,
                               schedule=TrainConfig(lr=lr, batch_size=batch_size, warmup_fraction=warmup_fraction),
                               seed=seed, max_grad_norm=max_grad_norm)
        finally:
            for p, requires_grad in before:
                p.requires_grad_(requires_grad)

    def _mimic(self, model: nn.Module, keep: dict[str, list[int]], learnable: list[nn.Parameter], *, steps: int,
               first: int, last: int, targets: list[int], schedule: TrainConfig, seed: int,
               max_grad_norm: float | None) -> TrainOutcome:
        if not learnable:
            return TrainOutcome(steps=0, samples=0, final_loss=float("nan"), diverged=False)
        optimizer = torch.optim.Adam(learnable, lr=schedule.lr)
        model.eval()
        loss_value, samples = float("nan"), 0
        for step, idx in enumerate(batch_indices(self.inputs.n_train, schedule.batch_size, steps, seed)):
            x = self.inputs.train_batch(idx)
            with torch.no_grad():
                dense = self._features(self._dense, x)
            learnt = self._learnt_features(model, x, detach_after=first - 1, stop_after=last)
            loss = sum(_normalised_error(self._widen(learnt[self.split.boundaries[s]],
                                                     dense[self.split.boundaries[s]], s, keep),
                                         dense[self.split.boundaries[s]]) for s in targets)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, schedule)
            if not loss.requires_grad:  # the pruned stages hold nothing to learn (a removed block)
                return TrainOutcome(steps=0, samples=0, final_loss=float(loss), diverged=False)
            loss_value = float(loss.detach())
            samples += len(idx)
            if not torch.isfinite(loss.detach()):
                return TrainOutcome(steps=step + 1, samples=samples, final_loss=loss_value, diverged=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(learnable, max_grad_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return TrainOutcome(steps=steps, samples=samples, final_loss=loss_value, diverged=False)

    def _learnt_features(self, model: nn.Module, x: torch.Tensor, *, detach_after: int,
                         stop_after: int) -> dict[str, torch.Tensor]:
        """``model``'s features at the boundaries up to ``stop_after``, with gradients; the
        output of boundary ``detach_after`` (-1: none) is detached, and the pass ends at
        ``stop_after``'s boundary when that is not the output."""
        modules = dict(model.named_modules())
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for s, boundary in enumerate(self.split.boundaries[: stop_after + 1]):
            if boundary == OUTPUT:
                continue

            def hook(_m: nn.Module, _i: object, output: Any, name: str = boundary,
                     detach: bool = s == detach_after, stop: bool = s == stop_after) -> Any:
                features = _first(output)
                captured[name] = features.float()
                if stop:
                    raise _StopForward
                return _with_first(output, features.detach()) if detach else output
            handles.append(modules[boundary].register_forward_hook(hook))
        try:
            with self.inputs.autocast():
                captured[OUTPUT] = self.inputs.output(model, x).float()
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _features(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        modules = dict(model.named_modules())
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for boundary in self.split.boundaries[:-1]:
            def hook(_m: nn.Module, _i: object, output: Any, name: str = boundary) -> None:
                captured[name] = _first(output).detach().float().clone()
            handles.append(modules[boundary].register_forward_hook(hook))
        try:
            with self.inputs.autocast():
                captured[OUTPUT] = self.inputs.output(model, x).detach().float()
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _widen(self, pruned: torch.Tensor, dense: torch.Tensor, stage: int, keep: dict[str, list[int]]) -> torch.Tensor:
        """``pruned`` at the dense width: its channels at the positions the carried group keeps."""
        if pruned.shape == dense.shape:
            return pruned
        carried = self.split.carried[stage]
        kept = keep.get(self.space.groups[carried].name) if carried is not None else None
        if kept is None or len(kept) != pruned.shape[1] or pruned.shape[2:] != dense.shape[2:]:
            raise ValueError(f"the features at {self.split.boundaries[stage]} have shape {tuple(pruned.shape)}, "
                             f"the dense model's {tuple(dense.shape)}, and no group says which channels remain")
        return torch.zeros_like(dense).index_copy(1, torch.as_tensor(kept, device=dense.device), pruned)


def _first(output: Any) -> torch.Tensor:
    """The features a boundary module returns: the tensor itself, or the first element of
    a tuple (a transformer block's hidden states before its attention weights or cache)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output: Any, features: torch.Tensor) -> Any:
    """``output`` with its features replaced by ``features``, in the same form."""
    return (features, *output[1:]) if isinstance(output, (tuple, list)) else features


class _StopForward(Exception):
    """Ends a forward pass at the last boundary :meth:`FeatureDistortion.mimic` trains."""


def _normalised_error(pruned: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``sum((pruned - dense)**2) / sum((dense - mean(dense))**2)``, differentiable in ``pruned``."""
    return (pruned - dense).pow(2).sum() / (dense - dense.mean()).pow(2).sum().clamp_min(1e-12)
