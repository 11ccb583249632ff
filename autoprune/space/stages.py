"""Find a model's stages: cuts in its forward pass where the feature map changes shape.

EMO-PMS (:mod:`autoprune.searchers.emo_pms`) divides the network into sub-networks at
stage boundaries, where the resolution or the width changes (a CIFAR ResNet's three
stages). Found from one forward pass with hooks, without reading the model's code:

1. Every module that runs once and returns one tensor is a candidate, in the order its
   forward pass finishes; its layers are those whose forward starts before it finishes.
2. Consecutive candidates with the same output shape form a run; the last candidate of a
   run that is a *cut* ends a stage. A cut is checked, not assumed: the module's output
   on input ``a`` is swapped for its output on input ``b``, and the model must then
   return its output on ``b`` (nothing after the module reads anything but it).
3. The last stage ends at the model's output. Stages that own no group (a pooling and a
   classifier after the last prunable layer) merge into the stage before them.

See :mod:`autoprune.space.stage_split` for what the split holds and how groups that
span stages are assigned.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.space.search_space import SearchSpace
from autoprune.space.stage_split import OUTPUT, StageSplit

logger = logging.getLogger(__name__)

#: how many candidates at the end of a run are tried as cuts before the run is given up
CUT_TRIES = 4


@dataclass(frozen=True)
class _Candidate:
    name: str
    shape: tuple[int, ...]
    finished: int  # event counter when its forward returned


def _record(model: nn.Module, x: torch.Tensor) -> tuple[list[_Candidate], dict[str, int], dict[str, torch.Tensor]]:
    """Candidates in finishing order, each leaf's start event, and every candidate's output."""
    names = {module: name for name, module in model.named_modules() if name}
    calls: dict[str, int] = {}
    started: dict[str, int] = {}
    outputs: dict[str, torch.Tensor] = {}
    finished: list[tuple[str, tuple[int, ...], int]] = []
    clock = [0]

    def pre(module: nn.Module, _args: object) -> None:
        name = names[module]
        clock[0] += 1
        started.setdefault(name, clock[0])
        calls[name] = calls.get(name, 0) + 1

    def post(module: nn.Module, _args: object, output: object) -> None:
        clock[0] += 1
        if isinstance(output, torch.Tensor):
            name = names[module]
            outputs[name] = output.detach().clone()  # an in-place activation after it would change it
            finished.append((name, tuple(output.shape[1:]), clock[0]))

    handles = [m.register_forward_pre_hook(pre) for m in names]
    handles += [m.register_forward_hook(post) for m in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    candidates = [_Candidate(name, shape, t) for name, shape, t in finished if calls.get(name) == 1]
    return candidates, started, outputs


def _is_cut(model: nn.Module, module: nn.Module, a: torch.Tensor, b_output: torch.Tensor,
            b_result: torch.Tensor) -> bool:
    """Whether the model's output on ``a`` with ``module``'s output swapped for its output on
    ``b`` is the model's output on ``b``."""
    handle = module.register_forward_hook(lambda _m, _i, _o: b_output.clone())
    try:
        with torch.no_grad():
            result = model(a)
    finally:
        handle.remove()
    return isinstance(result, torch.Tensor) and torch.allclose(result, b_result, rtol=1e-4, atol=1e-5)


def find_stages(dense: nn.Module, example_input: torch.Tensor, space: SearchSpace) -> StageSplit | None:
    """The stages of ``dense`` (see the module docstring); None when it has no cut that
    divides its groups into two or more stages, or does not run on random inputs of the
    example's shape."""
    try:
        return _find_stages(dense, example_input, space)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        logger.warning("stages: the model did not run on random inputs of its example's shape (%s: %s); no stages",
                       type(exc).__name__, exc)
        return None


def _find_stages(dense: nn.Module, example_input: torch.Tensor, space: SearchSpace) -> StageSplit | None:
    model = copy.deepcopy(dense).cpu().float().eval()
    generator = torch.Generator().manual_seed(0)
    a = torch.randn((2, *example_input.shape[1:]), generator=generator)
    b = torch.randn((2, *example_input.shape[1:]), generator=generator)
    candidates, started, _ = _record(model, a)
    _, _, b_outputs = _record(model, b)
    with torch.no_grad():
        b_result = model(b)
    if not isinstance(b_result, torch.Tensor):
        return None
    modules = dict(model.named_modules())
    runs: list[list[_Candidate]] = []
    for candidate in candidates:
        if runs and runs[-1][-1].shape == candidate.shape:
            runs[-1].append(candidate)
        else:
            runs.append([candidate])
    cuts: list[_Candidate] = []
    for run in runs[:-1]:  # the last run ends at the model's output
        for candidate in reversed(run[-CUT_TRIES:]):
            if _is_cut(model, modules[candidate.name], a, b_outputs[candidate.name], b_result):
                cuts.append(candidate)
                break
    first = [min((started[m] for m in group.members if m in started), default=None) for group in space.groups]
    if any(f is None for f in first):
        logger.info("stages: a group's layers did not run in the forward pass; no stages")
        return None
    boundaries = [c.name for c in cuts] + [OUTPUT]
    ends = [c.finished for c in cuts] + [float("inf")]
    owner = [next(s for s, end in enumerate(ends) if f < end) for f in first]
    # stages that own no group join the stage before (the first one: the stage after)
    keep = [s for s in range(len(boundaries)) if s in owner]
    if len(keep) < 2:
        return None
    kept_ends = [ends[s] for s in keep]
    kept_ends[-1] = float("inf")
    kept_boundaries = [boundaries[s] for s in keep]
    kept_boundaries[-1] = OUTPUT
    owner = [next(s for s, end in enumerate(kept_ends) if f < end) for f in first]
    carried = [_carried(space, started, kept_ends[s], kept_boundaries[s], modules, b_outputs)
               for s in range(len(kept_boundaries))]
    split = StageSplit(boundaries=tuple(kept_boundaries), owner=tuple(owner), carried=tuple(carried))
    logger.debug("stages: %s", split)
    return split


def _carried(space: SearchSpace, started: dict[str, int], end: float, boundary: str, modules: dict[str, nn.Module],
             outputs: dict[str, torch.Tensor]) -> int | None:
    """The group whose channels the boundary's tensor carries: the one group of its width
    with layers on both sides of the boundary (None for the output, or when none or several)."""
    if boundary == OUTPUT:
        return None
    width = outputs[boundary].shape[1]
    spanning = [g for g, group in enumerate(space.groups) if group.size == width
                and any(started.get(m, 0) < end for m in group.members)
                and any(started.get(m, 0) > end for m in group.members)]
    return spanning[0] if len(spanning) == 1 else None
