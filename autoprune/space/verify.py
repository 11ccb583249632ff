"""Hold the cost model to an independent count, so that a price is never silently wrong.

The cost model (:mod:`autoprune.space.analysis`) and the reference counter
(:mod:`autoprune.space.counting`) both learn what a layer costs from its
:class:`~autoprune.space.layer_kinds.LayerKind`; a layer whose arithmetic no kind
describes (a projection called as a function, a matrix product inside a custom block)
would be missed by both. PyTorch's own ``FlopCounterMode`` sees every matrix product and
convolution the forward pass dispatches, whatever module does it, so it is the
independent check: MACs are its FLOPs / 2. It runs with grad enabled, because
``nn.MultiheadAttention`` takes a fused path under ``no_grad`` whose work it does not see.
Parameters are counted on the model.

:func:`check_prices` runs at space-build time on the dense model and one pruned
candidate (a cheap subset of all candidates: one materialisation) and refuses the space
in one sentence naming the layers where the counts disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autoprune.errors import UserError
from autoprune.space.layer_kinds import kind_of
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndependentCount:
    """MACs per input from ``FlopCounterMode`` (FLOPs / 2), the parameter count, and the
    MACs it attributes to each module (by ``named_modules`` name, "" for the model)."""

    flops: int
    params: int
    per_module: dict[str, int]


def independent_count(model: nn.Module, example_input: torch.Tensor) -> IndependentCount:
    """Count ``model`` at one input of ``example_input``'s shape with ``FlopCounterMode``."""
    x = example_input[:1]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    per_module: dict[str, int] = {}
    root = type(model).__name__
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = key[len(root) + 1:] if key.startswith(root + ".") else ("" if key == root else None)
        if name is not None:
            per_module[name] = sum(ops.values()) // 2
    total = counter.get_total_flops() // 2
    return IndependentCount(flops=int(total), params=sum(p.numel() for p in model.parameters()),
                            per_module=per_module)


def unpriced_layers(model: nn.Module, example_input: torch.Tensor, counted: IndependentCount) -> list[str]:
    """The innermost layers whose MACs by ``FlopCounterMode`` differ from those their kinds
    count (summed over each layer's sub-layers), as ``'name' (Type)``."""
    from autoprune.space.counting import layer_positions

    positions = layer_positions(model, example_input[:1])
    ours: dict[str, int] = {}
    for name, module in model.named_modules():
        macs = kind_of(module).macs(module, positions.get(name, 0)) or 0
        parts = name.split(".") if name else []
        for depth in range(len(parts) + 1):
            prefix = ".".join(parts[:depth])
            ours[prefix] = ours.get(prefix, 0) + macs
    differing = [name for name in ours if ours[name] != counted.per_module.get(name, 0)]
    innermost = [n for n in differing if not any(o != n and (o.startswith(n + ".") or n == "") for o in differing)]
    return [f"{n!r} ({type(model.get_submodule(n)).__name__})" for n in innermost if n]


def check_prices(model: nn.Module, example_input: torch.Tensor, space: SearchSpace, *,
                 never_prune: list[str]) -> None:
    """Refuse ``space`` in one sentence unless its FLOPs and params equal the independent
    count on the dense model and on one candidate with mixed levels."""
    from autoprune.space.materialize import materialize

    dense = independent_count(model, example_input)
    _compare(model, example_input, dense, space.dense["flops"], space.dense["params"], what="the dense model")
    if space.n_levels < 2:
        return
    rng = np.random.default_rng(0)
    levels = rng.integers(0, space.n_levels, space.n_groups)
    levels[rng.integers(0, space.n_groups)] = space.n_levels - 1
    pruned, _ = materialize(model, space, levels, example_input, never_prune=never_prune)
    counted = independent_count(pruned, example_input)
    _compare(pruned, example_input, counted, int(space.cost("flops", levels)), int(space.cost("params", levels)),
             what="a pruned candidate")


def _compare(model: nn.Module, example_input: torch.Tensor, counted: IndependentCount, flops: int, params: int,
             *, what: str) -> None:
    if (counted.flops, counted.params) == (flops, params):
        return
    layers = unpriced_layers(model, example_input, counted) if counted.flops != flops else []
    where = f" in layer{'s' if len(layers) > 1 else ''} {', '.join(layers[:4])}" if layers else ""
    logger.debug("cost model %s MACs, %s params; FlopCounterMode %s MACs, %s params", flops, params,
                 counted.flops, counted.params)
    raise UserError(
        f"autoprune's cost model disagrees with torch's own count on {what} (MACs {flops:,} against {counted.flops:,}, "
        f"params {params:,} against {counted.params:,}){where}; that layer kind is not supported yet, so add "
        "those layers (or the blocks holding them) to never_prune or use another model."
    )

