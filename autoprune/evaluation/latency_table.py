"""Measure the per-layer latency tables of a :class:`LatencyModel` on this device.

Every convolution and linear layer is rebuilt standalone at each input/output channel
count the search space allows and timed on an input of its real spatial size (or
sequence length); identical shapes are timed once. Which layers are timed and how each
is rebuilt is up to its kind (:meth:`autoprune.space.layer_kinds.LayerKind.standalone`).
Every BatchNorm is timed too, together with an activation after it (LayerNorm, RMSNorm
and embedding tables on their own): these memory-bound passes cost no counted FLOPs but
real time (10-33% of the tables' sum for the zoo's models on CPU,
`experiments/results/latency_model.md`), which a convolution-only table left to the
calibration's scale to guess. A few whole candidates are then measured end to end to
calibrate ``scale`` and ``offset``. The result is cached per model, space, device,
threads and batch size, so it is paid once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import theilslopes
from torch import nn

from autoprune.errors import UserError
from autoprune.evaluation.allocator import keep_freed_memory
from autoprune.evaluation.latency import measure_latency
from autoprune.space.analysis import Coupling
from autoprune.space.layer_kinds import kind_of, priced_modules
from autoprune.space.latency_model import LatencyModel, LayerTable
from autoprune.space.search_space import SearchSpace
from autoprune.store.files import write_json_atomic

logger = logging.getLogger(__name__)


def _input_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable:
        def hook(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape[1:]))

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in priced_modules(model)
             if kind_of(module).timed(module)]  # an opaque layer's sub-layers follow its widths, not their couplings
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _side(coupling_side: Any, full: int, space: SearchSpace, layer: str) -> tuple[int, list[int]]:
    """(group index or -1, channel count at each level of that group)."""
    if coupling_side is None or not coupling_side.terms:
        return -1, [full]
    if len(coupling_side.terms) > 1:
        raise UserError(f"layer {layer!r} takes channels from several groups; the latency model cannot "
                        "tabulate it yet; use a FLOPs budget instead.")
    (group, multiplier), = coupling_side.terms.items()
    base = full + coupling_side.constant
    return group, [base + multiplier * k for k in space.groups[group].kept]


def _time_layer(layer: nn.Module, x: torch.Tensor, *, repeats: int, device: str) -> float:
    """Fastest milliseconds of one call over ``repeats`` blocks of calls.

    The minimum, not the median: on a shared machine interference only ever adds time,
    so the fastest block is the best estimate of what the layer itself costs (the advice
    of Python's ``timeit``). Blocks of calls stay above the timer's resolution."""
    layer = layer.to(device).eval()
    x = x.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    block = 5
    times = []
    with torch.inference_mode():
        for _ in range(3):
            layer(x)
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            for _ in range(block):
                layer(x)
            sync()
            times.append((time.perf_counter() - start) * 1e3 / block)
    return float(np.min(times))


def measure_tables(
    model: nn.Module, space: SearchSpace, couplings: dict[str, Coupling], example_input: torch.Tensor, *,
    batch_size: int, device: str = "cpu", repeats: int = 7,
) -> list[LayerTable]:
    """A lookup table per timed layer of ``model`` (convolutions, linear layers, BatchNorms...).

    Layers are timed with the allocator keeping freed buffers, as whole candidates are
    (:func:`measure_latency`): otherwise a layer's time includes page faults that depend
    on what ran before it, and alone it is not what it is inside the network."""
    keep_freed_memory()
    shapes = _input_shapes(model, example_input)
    modules = dict(model.named_modules())
    timed: dict[tuple, float] = {}
    tables = []
    for name, in_shape in shapes.items():
        module = modules[name]
        kind = kind_of(module)
        cin, cout = couplings.get(name, (None, None))
        full_in, full_out = kind.channels(module)
        if kind.shares_channels(module):  # one count for input and output, on whichever side the graph gave
            out_group, out_counts = _side(cout if cout is not None else cin, full_out, space, name)
            in_group, in_counts = -1, [0]
        else:
            in_group, in_counts = _side(cin, full_in, space, name)
            out_group, out_counts = _side(cout, full_out, space, name)
        table = np.zeros((len(in_counts), len(out_counts)))
        for i, n_in in enumerate(in_counts):
            for j, n_out in enumerate(out_counts):
                key = (type(module).__name__, repr(module)[:200], in_shape, n_in, n_out)
                if key not in timed:
                    layer, x = kind.standalone(module, in_shape, batch=batch_size, n_in=n_in, n_out=n_out)
                    timed[key] = _time_layer(layer, x, repeats=repeats, device=device)
                table[i, j] = timed[key]
        tables.append(LayerTable(name=name, in_group=in_group, out_group=out_group, table=table))
    logger.info("latency tables: %d layers, %d shapes timed", len(tables), len(timed))
    return tables


def calibrate(model: LatencyModel, candidates: list[np.ndarray], measure: Callable[[np.ndarray], float]) -> None:
    """Fit ``scale`` and ``offset`` of ``model`` to end-to-end measurements of ``candidates``."""
    sums = np.array([model.layer_sum(c)[0] for c in candidates])
    measured = np.array([measure(c) for c in candidates])
    scale = 0.0
    if np.ptp(sums) > 0:  # Theil-Sen: one disturbed measurement does not tilt the fit
        scale, offset, _, _ = theilslopes(measured, sums)
    if not scale > 0:
        # no usable slope (identical sums, or noise swamping a model whose time is all
        # overhead): trust the tables as measured and only add the overhead they miss
        scale, offset = 1.0, float(np.median(measured - sums))
    model.scale, model.offset = float(scale), float(offset)
    model.context["calibration"] = {"layer_sums": sums.round(6).tolist(), "measured_ms": measured.round(6).tolist()}


def cached_latency_model(folder: Path, prefix: str, context: dict[str, Any],
                         space: SearchSpace) -> tuple[Path, LatencyModel | None]:
    """Where the latency model of ``space`` measured in ``context`` is kept, and that model
    when it was measured before (an unreadable file is measured again)."""
    digest = hashlib.sha256(json.dumps({"context": context, "space": space.to_dict()}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    path = folder / f"{prefix}-{digest}.json"
    if path.is_file():
        try:
            return path, LatencyModel.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError):  # damaged, or not a latency model at all
            logger.warning("cached latency model %s is unreadable; measuring again", path)
    return path, None


def build_latency_model(
    *, model: nn.Module, space: SearchSpace, couplings: dict[str, Coupling], example_input: torch.Tensor,
    materialize: Callable[[np.ndarray], nn.Module], batch_size: int, device: str, cache_key: dict[str, Any],
    cache_folder: Path, seed: int = 0,
) -> LatencyModel:
    """Measure (or read from the cache) the latency model of ``space`` on this device."""
    context = {**cache_key, "batch_size": batch_size, "device": device, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "allocator": keep_freed_memory(), "version": 3}
    path, cached = cached_latency_model(cache_folder, "latency", context, space)
    if cached is not None:
        return cached
    logger.info("measuring per-layer latency tables on %s (first use; cached in %s)", device, path)
    tables = measure_tables(model, space, couplings, example_input, batch_size=batch_size, device=device)
    latency_model = LatencyModel(layers=tables, context=context)
    rng = np.random.default_rng(seed)
    calibration = [space.dense_candidate(), space.sparsest_candidate()]
    calibration += [space.uniform_candidate(l) for l in (space.n_levels // 4, space.n_levels // 2)]
    calibration += [rng.integers(0, space.n_levels, size=space.n_groups) for _ in range(4)]
    shape = tuple(example_input.shape[1:])
    calibrate(latency_model, calibration,
              lambda c: measure_latency(materialize(c), shape, batch_size=batch_size, device=device).median_ms)
    write_json_atomic(path, latency_model.to_dict())
    return latency_model
