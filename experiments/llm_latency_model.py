"""The language-model latency model against end-to-end measurement of random candidates.

For each geometry (random weights: timing depends on shapes only), the prefill latency
model of :mod:`autoprune.llm.latency` is built as a latency-budget run builds it, then
``--candidates`` random candidates of the default space (16 levels, kv_groups, removable
sub-blocks) are pruned and their prefill timed twice. Reported: Spearman's rank
correlation of predicted against measured latency, of params against measured (what a
params budget would assume), and of the two measurements against each other (the
ceiling measurement noise allows), the median absolute error, and the time it took to
build the model. Latencies are relative to the dense model timed just before each
candidate, so load that comes and goes on a shared machine cancels out.

Run::

    python experiments/llm_latency_model.py --config smollm2 --seq-len 128 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from autoprune.llm.latency import LMLatencyRequest, build_lm_latency_model
from autoprune.llm.lm_evaluator import LMEvaluatorConfig, measure_lm_latency
from autoprune.llm.prune import prune
from autoprune.llm.space import build_lm_space
from autoprune.space.levels import LevelGrid
from llm_assembly import CONFIGS, build
from proxy_fidelity import command_and_machine, markdown

RESULTS = Path(__file__).parent / "results"


def measure(config_name: str, args: argparse.Namespace) -> dict:
    dense = build(config_name)
    space = build_lm_space(dense, grid=LevelGrid.from_step(step=1 / 16, min_ratio=1 / 16), seq_len=args.seq_len)
    config = LMEvaluatorConfig(device="cpu", latency_repeats=args.repeats)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        model = build_lm_latency_model(LMLatencyRequest(dense=dense, space=space, config=config,
                                                        seq_len=args.seq_len, cache_folder=Path(cache)))
    build_seconds = time.perf_counter() - started
    rng = np.random.default_rng(1)
    candidates = rng.integers(0, space.n_levels, size=(args.candidates, space.n_groups))
    dense_predicted = float(model.predict(space.dense_candidate())[0])

    def relative(pruned: torch.nn.Module, seed: int) -> float:
        """The candidate's time over the dense model's timed just before it (load drifts cancel)."""
        dense_ms = measure_lm_latency(dense, config, args.seq_len, seed=seed, decode_too=False)["latency_ms"]
        return measure_lm_latency(pruned, config, args.seq_len, seed=seed, decode_too=False)["latency_ms"] / dense_ms

    predicted, first, second = [], [], []
    for levels in candidates:
        pruned = prune(dense, space, levels)[0]
        first.append(relative(pruned, 0))
        second.append(relative(pruned, 1))
        predicted.append(float(model.predict(levels)[0]) / dense_predicted)
    measured = np.array(first)
    params = space.relative_cost("params", candidates)
    return {
        "model": config_name,
        "seq_len": args.seq_len,
        "candidates": args.candidates,
        "spearman_model": float(spearmanr(predicted, measured)[0]),
        "spearman_params": float(spearmanr(params, measured)[0]),
        "spearman_remeasure": float(spearmanr(first, second)[0]),
        "median_abs_error": float(np.median(np.abs(np.array(predicted) - measured))),
        "measured_min": float(measured.min()),
        "measured_max": float(measured.max()),
        "dense_ms_predicted": dense_predicted,
        "build_s": build_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append",
                        help="model geometry (repeatable; default: tiny and smollm2)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed prefills per measurement (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_latency_model.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, args) for name in (args.config or ["tiny", "smollm2"])]
    lines = [
        "# Language-model latency model: predicted against measured prefill latency",
        "",
        *command_and_machine("llm_latency_model.py"),
        "",
        f"{args.candidates} random candidates of the default space per geometry (random weights), prefill of "
        f"1 x {args.seq_len} tokens, median of {args.repeats}. Every latency is relative: a candidate's time over "
        "the dense model's timed just before it (so load that comes and goes on a shared machine cancels), and "
        "the prediction over the predicted dense time. `spearman_model`: the latency model's prediction "
        "against measured; `spearman_params`: the candidates' params alone against measured; "
        "`spearman_remeasure`: two measurements of the same candidates against each other (the noise ceiling); "
        "`median_abs_error`: of the relative latency; `measured_min`/`max`: the candidates' relative latencies.",
        "",
        markdown(pd.DataFrame(rows)),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
