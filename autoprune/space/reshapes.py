"""Reshapes that split the channel dimension into groups (a channel shuffle), hidden from
Torch-Pruning while it traces, and the groups whose channels pass through them.

ShuffleNet's channel shuffle views ``(B, C, H, W)`` as ``(B, g, C/g, H, W)``, swaps the two
group dimensions and flattens back, so channel ``i`` moves to a position that depends on
``C``. Torch-Pruning maps indices through such reshapes as if they flattened a feature
map: its graph build divided by zero on every ShuffleNetV2, and where it went through,
pruning removed the wrong channels. While the graph is traced, :class:`HiddenChannelSplits`
runs each such reshape (the split and the merge back) as one opaque operation, which
Torch-Pruning passes channels through unchanged, and records it with the layer doing it.
The channels inside a unit (a ShuffleNet branch's hidden width) never meet it and are
pruned as usual; a group that does meet it, whose channel positions the shuffle permutes,
is refused naming that layer (:func:`autoprune.space.graph.trace_groups`), and its
``never_prune`` line leaves the stream whole. Reshapes inside a layer whose kind autoprune
knows (the head split of ``nn.MultiheadAttention``) are that kind's business and left alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from autoprune.space.layer_kinds import UNKNOWN, kind_of

logger = logging.getLogger(__name__)

_RESHAPES = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.unflatten, torch.unflatten}


class _Regroup(torch.autograd.Function):
    """A reshape whose autograd node Torch-Pruning does not recognise as one (it treats an
    unknown node as element-wise: same channels in, same channels out)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        ctx.before = x.shape
        return x.reshape(shape).clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.reshape(ctx.before), None


class HiddenChannelSplits(TorchFunctionMode):
    """Runs every reshape that splits dimension 1 of a feature map into groups, or merges
    such groups back, outside layers of a known kind, as one opaque autograd node (with
    grad enabled, as when Torch-Pruning traces); ``layers`` maps each node to the innermost
    layer that ran it (``""``: the model's own forward). Use around a forward pass, with
    :meth:`watch` giving the layer names."""

    def __init__(self) -> None:
        super().__init__()
        self.layers: dict[Any, str] = {}
        self._open: list[str] = []
        self._known: list[bool] = []

    def watch(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Hooks on ``model``'s layers that keep track of the innermost open one (remove them after)."""
        names = {module: name for name, module in model.named_modules()}

        def entered(module: nn.Module, _args: tuple) -> None:
            self._open.append(names[module])
            self._known.append(kind_of(module) is not UNKNOWN or (bool(self._known) and self._known[-1]))

        def left(module: nn.Module, _args: tuple, _out: Any) -> None:
            if self._open and self._open[-1] == names[module]:
                self._open.pop()
                self._known.pop()

        return [h for m in names for h in (m.register_forward_pre_hook(entered), m.register_forward_hook(left))]

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if (func in _RESHAPES and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor)
                and torch.is_grad_enabled() and not (self._known and self._known[-1])):
            before, after = args[0].shape, out.shape
            if _splits_channels(before, after) or _splits_channels(after, before):
                out = _Regroup.apply(args[0], tuple(after))
                self.layers[out.grad_fn] = self._open[-1] if self._open else ""
        return out


def _splits_channels(before: torch.Size, after: torch.Size) -> bool:
    """Whether a feature map ``(B, C, H, W)`` becomes ``(B, g, C/g, H, W)`` with ``g`` and
    ``C/g`` above 1 (a token tensor's split, such as a window partition, is not this)."""
    if len(before) != 4 or len(after) != 5 or after[0] != before[0]:
        return False
    return after[1] * after[2] == before[1] and after[1] > 1 and after[2] > 1 and tuple(after[3:]) == tuple(before[2:])
