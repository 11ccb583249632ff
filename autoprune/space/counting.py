"""Count FLOPs (MACs) and params of a built model: the trusted reference.

The cost model predicts these numbers from a level vector; this module measures them
on a real ``nn.Module`` with forward hooks, so tests can hold the prediction to it.
Each layer's MACs come from its kind. A layer with parameters whose kind does not count
its arithmetic (a GRU, a custom block) is reported in ``unsupported`` and its MACs are
taken from PyTorch's ``FlopCounterMode`` (:func:`independent_count`), which sees every
matrix product and convolution it dispatches: never silently zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from autoprune.space.layer_kinds import kind_of, priced_modules


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

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> None:
            if isinstance(output, tuple):  # an attention layer's (output, weights)
                output = output[0]
            positions[name] = positions.get(name, 0) + kind_of(module).output_positions(module, inputs, output, batch)

        return hook

    for name, module in model.named_modules():
        if kind_of(module).position_channels(module) is not None:
            hooks.append(module.register_forward_hook(make_hook(name)))
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
    parameters whose kind does not count its arithmetic is reported in ``unsupported``
    and counted by ``FlopCounterMode`` (:func:`uncounted_macs`)."""
    positions = layer_positions(model, example_input)
    flops = 0
    for name, module in priced_modules(model):
        flops += kind_of(module).macs(module, positions.get(name, 0)) or 0
    extra = uncounted_macs(model, example_input, positions)
    params = sum(p.numel() for p in model.parameters())
    unsupported = [f"{name} ({type(model.get_submodule(name)).__name__})" for name in extra]
    return Count(flops=int(flops + sum(extra.values())), params=int(params), unsupported=unsupported)


def uncounted_macs(model: nn.Module, example_input: torch.Tensor, positions: dict[str, int]) -> dict[str, int]:
    """MACs of each layer with parameters whose kind does not count its arithmetic, by
    ``FlopCounterMode``, less what the kinds count in its sub-layers (run only when such
    a layer exists)."""
    unknown = [name for name, module in priced_modules(model)
               if kind_of(module).macs(module, 0) is None and any(True for _ in module.parameters(recurse=False))]
    if not unknown:
        return {}
    counted = independent_count(model, example_input)
    extra: dict[str, int] = {}
    for name in sorted(unknown, key=lambda n: -len(n.split(".")) if n else 0):  # innermost first
        inside = sum(kind_of(m).macs(m, positions.get(_join(name, n), 0)) or 0
                     for n, m in priced_modules(model.get_submodule(name)))
        nested = sum(v for other, v in extra.items() if _inside(other, name))
        extra[name] = counted.per_module.get(name, 0) - inside - nested
    return extra


def _inside(name: str, container: str) -> bool:
    return name != container and (container == "" or name.startswith(container + "."))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else (prefix or name)


@dataclass(frozen=True)
class IndependentCount:
    """MACs per input from ``FlopCounterMode`` (FLOPs / 2), the parameter count, and the
    MACs it attributes to each module (by ``named_modules`` name, "" for the model)."""

    flops: int
    params: int
    per_module: dict[str, int]


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU's fused attention kernel, which torch's flop registry leaves out."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa}


def independent_count(model: nn.Module, example_input: torch.Tensor) -> IndependentCount:
    """Count ``model`` at one input of ``example_input``'s shape with ``FlopCounterMode``: MACs
    are its FLOPs / 2. It runs with grad enabled, because ``nn.MultiheadAttention`` takes a
    fused path under ``no_grad`` whose work it does not see."""
    x = example_input[:1]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
            model(x)
    finally:
        model.train(was_training)
    per_module: dict[str, int] = {}
    root = type(model).__name__
    for key, ops in counter.get_flop_counts().items():
        if key == root:
            per_module[""] = sum(ops.values()) // 2
        elif key.startswith(root + "."):
            per_module[key[len(root) + 1:]] = sum(ops.values()) // 2
    return IndependentCount(flops=int(counter.get_total_flops() // 2), params=sum(p.numel() for p in model.parameters()),
                            per_module=per_module)
