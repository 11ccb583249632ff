"""A latency model of a language model's candidates, so a search can be held to a latency budget.

The latency that counts is what every trial measures as ``latency_ms``: one prefill of
``(latency_batch_size, seq_len)`` tokens. The decoder blocks of a causal LM are alike, so
what pruning one block's attention (or MLP) to a level saves does not depend on which
block it is. Per group kind and per distinct kept count, the model with *every* block's
group of that kind at that level (the other kind dense) is timed end to end; the saving
per block is the difference to the dense model (timed just before it, so that a change
of the machine's load during the build does not enter the difference) divided by the
number of blocks. That is about twenty pairs of whole-model timings instead of one per
group and level, and each per-block figure is averaged over every block. A candidate's prediction is the dense latency minus
its blocks' savings (a removed sub-block saves its whole time), in the same
:class:`~autoprune.space.latency_model.LatencyModel` the image models use (one table per
group), then calibrated on a few random candidates timed end to end, as NetAdapt-style
tables are (:func:`autoprune.evaluation.latency_table.calibrate`).

Which units a group keeps does not change its time, only how many: candidates are built
with magnitude order here, whatever importance the search uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune.errors import UserError
from autoprune.evaluation.latency_table import cached_latency_model, calibrate
from autoprune.llm.importance import unit_orders
from autoprune.llm.lm_evaluator import LMEvaluatorConfig, measure_lm_latency
from autoprune.llm.prune import prune
from autoprune.llm.structure import find_structure
from autoprune.space.latency_model import LatencyModel, LayerTable
from autoprune.space.search_space import SearchSpace
from autoprune.store.files import write_json_atomic
from autoprune.tasks import cache_dir

logger = logging.getLogger(__name__)

#: random candidates timed end to end to calibrate the tables' sum
CALIBRATION_CANDIDATES = 6
#: the fewest timed repeats of each model the tables and the calibration are built from
TIMING_REPEATS = 9


@dataclass(frozen=True)
class LMLatencyRequest:
    """What a worker needs to measure the latency model where the trials are measured."""

    dense: Any  # torch.nn.Module
    space: SearchSpace
    config: LMEvaluatorConfig
    seq_len: int
    #: where measured models are kept; None: autoprune's cache folder on the measuring machine
    cache_folder: Path | None = None
    cache_key: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def group_kind(name: str) -> str:
    """``attn`` or ``mlp``: the last part of a language-model group's name (``layers.3.mlp``)."""
    return name.rsplit(".", 1)[-1]


def build_lm_latency_model(request: LMLatencyRequest) -> LatencyModel:
    """Measure (or read from the cache) the prefill latency model of ``request.space``."""
    space, config = request.space, request.config
    context = {**request.cache_key, "kind": "language-model prefill", "seq_len": request.seq_len,
               "batch_size": config.latency_batch_size, "device": config.device,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "version": 2}
    folder = Path(request.cache_folder) if request.cache_folder is not None else cache_dir()
    path, cached = cached_latency_model(folder, "latency-lm", context, space)
    if cached is not None:
        return cached
    logger.info("timing language-model candidates for the latency model (first use; cached in %s)", path)
    dense = request.dense.eval()
    orders = unit_orders(dense, find_structure(dense), space, importance="magnitude")

    timing = replace(config, latency_repeats=max(config.latency_repeats, TIMING_REPEATS))

    def prefill_ms(levels: np.ndarray) -> float:
        model = dense if not levels.any() else prune(dense, space, levels, orders=orders)[0]
        return measure_lm_latency(model, timing, request.seq_len, seed=request.seed, decode_too=False)["latency_ms"]

    prefill_ms(space.dense_candidate())  # the first model timed pays for warming up the allocator and caches
    dense_timings = [prefill_ms(space.dense_candidate())]

    def saving_ms(candidate: np.ndarray) -> float:
        """The dense model's time minus ``candidate``'s, timed back to back: a change of the
        machine's load during the build then shifts both alike instead of entering the table."""
        dense_timings.append(prefill_ms(space.dense_candidate()))
        return dense_timings[-1] - prefill_ms(candidate)

    tables = np.zeros((space.n_groups, space.n_levels))
    kinds = {group_kind(name) for name in space.group_names}
    for kind in sorted(kinds):
        members = np.array([group_kind(name) == kind for name in space.group_names])
        first = int(np.flatnonzero(members)[0])
        timed: dict[int, float] = {}
        kept_at = {}
        for level in range(1, space.n_levels):
            candidate = np.where(members, level, 0).astype(np.int64)
            kept_at[level] = kept = int(space.kept_counts(candidate)[first])
            if kept not in timed:
                timed[kept] = saving_ms(candidate) / members.sum()
        saved = monotone_savings(timed)
        for level, kept in kept_at.items():
            tables[members, level] = -saved[kept]
        logger.info("latency per %s block: ms saved by kept count %s",
                    kind, {k: round(v, 3) for k, v in sorted(saved.items())})
    latency_model = LatencyModel(
        layers=[LayerTable(name=name, in_group=-1, out_group=g, table=tables[g][None, :])
                for g, name in enumerate(space.group_names)], context=context)
    rng = np.random.default_rng(request.seed)
    calibration = [space.dense_candidate(), space.uniform_candidate(space.n_levels // 2)]
    calibration += [rng.integers(0, space.n_levels, size=space.n_groups) for _ in range(CALIBRATION_CANDIDATES)]
    # the tables are savings below the dense time, which joins the sum as one more table
    dense_ms = float(np.median(dense_timings))
    latency_model.layers.append(LayerTable(name="dense", in_group=-1, out_group=-1, table=np.array([[dense_ms]])))
    calibrate(latency_model, calibration, prefill_ms)
    write_json_atomic(path, latency_model.to_dict())
    return latency_model


def monotone_savings(timed: dict[int, float]) -> dict[int, float]:
    """Per kept count, the milliseconds saved, made to fall as more is kept and never below 0.

    Keeping more units never makes a block faster; single timings on a busy machine can say
    otherwise, and a table that did would reward keeping more. Isotonic regression finds
    the closest savings that do not (pool-adjacent-violators, as scikit-learn fits it)."""
    from sklearn.isotonic import IsotonicRegression

    counts = sorted(timed)
    fitted = IsotonicRegression(increasing=False, y_min=0.0).fit_transform(counts, [timed[k] for k in counts])
    return {k: float(v) for k, v in zip(counts, fitted)}


def check_latency_measured(config: LMEvaluatorConfig) -> None:
    """A latency budget is checked on measured trials: refuse one when they are not timed."""
    if not config.measure_latency or config.latency_repeats < 1:
        raise UserError("a latency budget needs every trial's latency measured; leave --latency-repeats above 0.")

