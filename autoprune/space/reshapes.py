"""Find reshapes that split the channel dimension into groups (a channel shuffle).

ShuffleNet's channel shuffle views ``(B, C, H, W)`` as ``(B, g, C/g, H, W)``, swaps the two
group dimensions and flattens back, so channel ``i`` moves to a position that depends on
``C``. Torch-Pruning maps indices through such reshapes as if they kept their order: the
analysis may even go through, but pruning then removes the wrong channels or indexes
past a tensor's end. :func:`channel_splits` runs the model once and names the layers
whose own code splits channels this way, so the analysis refuses them in one sentence
instead. Splits inside a layer whose kind autoprune knows (the head split of
``nn.MultiheadAttention``) are that kind's business and are left alone.
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


class _SplitWatch(TorchFunctionMode):
    """Records the innermost open layer at every reshape that splits dimension 1 into several."""

    def __init__(self, open_layers: list[str], known: list[bool]) -> None:
        super().__init__()
        self.open_layers = open_layers
        self.known = known
        self.found: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _RESHAPES and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            if self.open_layers and not self.known[-1] and _splits_channels(args[0].shape, out.shape):
                self.found.append(self.open_layers[-1])
        return out


def _splits_channels(before: torch.Size, after: torch.Size) -> bool:
    """Whether a feature map ``(B, C, H, W)`` becomes ``(B, g, C/g, H, W)`` with ``g`` and
    ``C/g`` above 1 (a token tensor's split, such as a window partition, is not this)."""
    if len(before) != 4 or len(after) != 5 or after[0] != before[0]:
        return False
    return after[1] * after[2] == before[1] and after[1] > 1 and after[2] > 1 and tuple(after[3:]) == tuple(before[2:])


def channel_splits(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the layers (outermost model: "") whose forward splits the channel dimension
    with a reshape, outside layers of a known kind, in the order first met."""
    names = {module: name for name, module in model.named_modules()}
    open_layers: list[str] = []
    known: list[bool] = []

    def entered(module: nn.Module, _args: tuple) -> None:
        open_layers.append(names[module])
        known.append(kind_of(module) is not UNKNOWN or (bool(known) and known[-1]))

    def left(module: nn.Module, _args: tuple, _out: Any) -> None:
        if open_layers and open_layers[-1] == names[module]:
            open_layers.pop()
            known.pop()

    hooks = [h for m in names for h in (m.register_forward_pre_hook(entered), m.register_forward_hook(left))]
    watch = _SplitWatch(open_layers, known)
    was_training = model.training
    try:
        with torch.no_grad(), watch:
            model.eval()(example_input[:1])
    except Exception:  # noqa: BLE001  (the analysis runs the model again and names any failure)
        logger.debug("channel split detection stopped by a failing forward", exc_info=True)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(watch.found))
