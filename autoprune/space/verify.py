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

import numpy as np
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.space.counting import IndependentCount, independent_count, layer_positions, uncounted_macs
from autoprune.space.layer_kinds import kind_of, priced_modules
from autoprune.space.locate import LayerLocator
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)


def unpriced_layers(model: nn.Module, example_input: torch.Tensor, counted: IndependentCount) -> list[str]:
    """Names of the innermost layers whose MACs by ``FlopCounterMode`` differ from those the
    kinds count (summed over each layer's sub-layers, with :func:`uncounted_macs` for
    layers no kind counts)."""
    positions = layer_positions(model, example_input[:1])
    ours: dict[str, int] = {}
    extra = uncounted_macs(model, example_input, positions)
    for name, module in priced_modules(model):
        macs = (kind_of(module).macs(module, positions.get(name, 0)) or 0) + extra.get(name, 0)
        parts = name.split(".") if name else []
        for depth in range(len(parts) + 1):
            prefix = ".".join(parts[:depth])
            ours[prefix] = ours.get(prefix, 0) + macs
    differing = [name for name in ours if ours[name] != counted.per_module.get(name, 0)]
    return [n for n in differing if not any(o != n and (n == "" or o.startswith(n + ".")) for o in differing)]


def check_prices(model: nn.Module, example_input: torch.Tensor, space: SearchSpace, *,
                 never_prune: list[str]) -> None:
    """Refuse ``space`` in one sentence unless its FLOPs and params equal the independent
    count on the dense model and on one candidate with mixed levels."""
    from autoprune.space.materialize import materialize

    dense = independent_count(model, example_input)
    _compare(model, example_input, dense, space, space.dense_candidate(), what="the dense model")
    if space.n_levels < 2:
        return
    rng = np.random.default_rng(0)
    levels = rng.integers(0, space.n_levels, space.n_groups)
    levels[rng.integers(0, space.n_groups)] = space.n_levels - 1
    pruned, _ = materialize(model, space, levels, example_input, never_prune=never_prune)
    try:
        counted = independent_count(pruned, example_input)
    except Exception as exc:  # a layer that keeps its old width in an attribute Torch-Pruning does not know
        raise _fails_pruned(pruned, example_input, space, exc) from None
    _compare(pruned, example_input, counted, space, levels, what="a pruned candidate")


def _fails_pruned(pruned: nn.Module, example_input: torch.Tensor, space: SearchSpace, exc: Exception) -> UserError:
    """The refusal for a model that no longer runs once pruned: the pass is run again to
    find the layer it fails in and the last layer with parameters that finished before,
    whose groups are the ones to keep whole."""
    finished: list[str] = []
    hooks = [module.register_forward_hook(lambda *_a, _n=name: finished.append(_n))
             for name, module in pruned.named_modules() if name and any(True for _ in module.parameters(False))]
    try:
        with LayerLocator(model=pruned) as locator, torch.no_grad():
            try:
                pruned.eval()(example_input[:1])
            except Exception as again:  # noqa: BLE001  (the same failure, now watched)
                exc = again
    finally:
        for hook in hooks:
            hook.remove()
    place = locator.layer_of(exc)
    where = f" in layer {_described(pruned, place[0])}" if place else ""
    after = finished[-1] if finished else None
    roots = [g.name for g in space.groups if after in g.members]
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    if not roots:
        return UserError(f"the model fails once pruned{where} ({reason}); that layer kind is not supported yet, so "
                         "use another model.")
    return UserError(f"the model fails once pruned{where}, right after layer {_described(pruned, after)} ({reason}): "
                     "a layer there keeps its width somewhere autoprune cannot update, so to keep it whole put this "
                     f"line in a --space file: never_prune: [{', '.join(roots)}]")


def _compare(model: nn.Module, example_input: torch.Tensor, counted: IndependentCount, space: SearchSpace,
             levels: np.ndarray, *, what: str) -> None:
    flops, params = int(space.cost("flops", levels)), int(space.cost("params", levels))
    if (counted.flops, counted.params) == (flops, params):
        return
    logger.debug("cost model %s MACs, %s params; FlopCounterMode %s MACs, %s params", flops, params,
                 counted.flops, counted.params)
    names = unpriced_layers(model, example_input, counted) if counted.flops != flops else []
    where = f" in layer{'s' if len(names) > 1 else ''} {', '.join(_described(model, n) for n in names[:4])}" if names else ""
    numbers = f"MACs {flops:,} against {counted.flops:,}, params {params:,} against {counted.params:,}"
    roots = [g.name for g in space.groups
             if any(m == n or m.startswith(n + ".") or n == "" for m in g.members for n in names)]
    if what == "the dense model" or not roots:
        raise UserError(f"autoprune's cost model disagrees with torch's own count on {what} ({numbers}){where}; "
                        "that layer kind is not supported yet, so use another model.")
    raise UserError(f"autoprune's cost model disagrees with torch's own count on {what} ({numbers}){where}; "
                    "that layer kind cannot be priced pruned yet, so to keep it whole put this line in a --space "
                    f"file: never_prune: [{', '.join(roots)}]")


def _described(model: nn.Module, name: str) -> str:
    return f"{name!r} ({type(model.get_submodule(name)).__name__})"
