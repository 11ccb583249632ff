"""Count FLOPs (MACs) and params of a built model: the trusted reference.

The cost model predicts these numbers from a level vector; this module measures them
on a real ``nn.Module`` with forward hooks, so tests can hold the prediction to it.
Following fvcore, it reports what it could not count instead of silently counting zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from autoprune.space.layer_kinds import kind_of


@dataclass
class Count:
    """FLOPs are multiply-accumulates for one input; ``unsupported`` names layers whose
    arithmetic was not counted although they hold parameters."""

    flops: int
    params: int
    unsupported: list[str] = field(default_factory=list)


def layer_positions(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Output positions per sample of each layer whose MACs scale with them (convolutions,
    linear layers: :meth:`LayerKind.position_channels`), summed over calls.

    A convolution's MACs are ``positions * out_channels * in_channels/groups * kernel``;
    positions is ``H_out * W_out`` (or tokens for a linear layer). Summing over calls
    makes a layer used twice count twice.
    """
    positions: dict[str, int] = {}
    batch = example_input.shape[0]
    hooks = []

    def make_hook(name: str, out_dim: int):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            positions[name] = positions.get(name, 0) + output.numel() // (batch * out_dim)

        return hook

    for name, module in model.named_modules():
        out_dim = kind_of(module).position_channels(module)
        if out_dim is not None:
            hooks.append(module.register_forward_hook(make_hook(name, out_dim)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return positions


def count(model: nn.Module, example_input: torch.Tensor) -> Count:
    """FLOPs (MACs per input) and parameter count of ``model`` at ``example_input``'s shape.

    Each layer's MACs come from its kind (:meth:`LayerKind.macs`); a layer with
    parameters whose kind does not count its arithmetic is reported in ``unsupported``."""
    positions = layer_positions(model, example_input)
    flops = 0
    unsupported: list[str] = []
    for name, module in model.named_modules():
        macs = kind_of(module).macs(module, positions.get(name, 0))
        if macs is not None:
            flops += macs
        elif any(True for _ in module.parameters(recurse=False)):
            unsupported.append(f"{name} ({type(module).__name__})")
    params = sum(p.numel() for p in model.parameters())
    return Count(flops=int(flops), params=int(params), unsupported=unsupported)
