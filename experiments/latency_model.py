"""How well does the per-layer latency table predict measured latency? (issue 3)

For each model, the latency model is built as a search builds it (tables timed per layer
shape, calibrated on a few whole candidates), then at least 30 random candidates (levels
drawn uniformly per group, so FLOPs spread from the sparsest to the dense model) are
materialised and measured end to end (median of repeated runs after warm-up, the
evaluator's measurement). We report Spearman's rank correlation and the median relative
error between predicted and measured latency, at batch size 1 and at a large batch.

Then, for uniform allocations at several levels (the shape of a front: one model per
cost), measured speed-up against FLOPs reduction, at both batch sizes: FLOPs halved is
rarely twice as fast, which is why latency is its own objective.

Weights are random (latency does not depend on their values), so no data is needed.

    python experiments/latency_model.py --models digitnet:8:1,resnet20:32:3 --candidates 30 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from autoprune.evaluation.latency import measure_latency
from autoprune.evaluation.latency_table import build_latency_model
from autoprune.models import build_model
from autoprune.space.analysis import analyse
from autoprune.space.config import load_space_config
from autoprune.space.materialize import materialize
from proxy_fidelity import command_and_machine, markdown

RESULTS = Path(__file__).parent / "results"


def study_model(name: str, image_size: int, channels: int, args) -> tuple[list[dict], list[dict]]:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, image_size=image_size, num_classes=10).eval()
    config = load_space_config(name)
    never = list(config.never_prune)
    example = torch.randn(1, channels, image_size, image_size)
    space, couplings = analyse(model, example, grid=config.grid, never_prune=never)
    shape = (channels, image_size, image_size)

    def build(levels: np.ndarray) -> torch.nn.Module:
        return materialize(model, space, levels, example, never_prune=never)[0]

    rng = np.random.default_rng(args.seed)
    candidates = [rng.integers(0, space.n_levels, size=space.n_groups) for _ in range(args.candidates)]
    uniform = [space.uniform_candidate(level) for level in range(0, space.n_levels, max(1, space.n_levels // 6))]
    accuracy_rows, speedup_rows = [], []
    for batch in args.batch_sizes:
        with tempfile.TemporaryDirectory() as cache:  # measured afresh, as on a new machine
            latency_model = build_latency_model(
                model=model, space=space, couplings=couplings, example_input=example, materialize=build,
                batch_size=batch, device="cpu", cache_folder=Path(cache), cache_key={"model": name},
            )
        predicted = latency_model.predict(np.array(candidates))
        measured = np.array([measure_latency(build(c), shape, batch_size=batch, repeats=args.repeats).median_ms
                             for c in candidates])
        rho, _ = spearmanr(predicted, measured)
        flops = space.relative_cost("flops", np.array(candidates))
        rho_flops, _ = spearmanr(flops, measured)
        accuracy_rows.append({
            "model": name, "input": f"{channels}x{image_size}x{image_size}", "batch": batch,
            "candidates": len(candidates), "spearman_table": rho, "spearman_flops": rho_flops,
            "median_rel_error": float(np.median(np.abs(predicted - measured) / measured)),
            "measured_ms_min": measured.min(), "measured_ms_max": measured.max(),
            "scale": latency_model.scale, "offset_ms": latency_model.offset,
        })
        dense_ms = measure_latency(model, shape, batch_size=batch, repeats=args.repeats).median_ms
        for levels in uniform:
            ms = measure_latency(build(levels), shape, batch_size=batch, repeats=args.repeats).median_ms
            speedup_rows.append({
                "model": name, "batch": batch, "uniform_level": int(levels[0]),
                "flops_ratio": float(space.relative_cost("flops", levels)),
                "flops_reduction": float(1.0 / space.relative_cost("flops", levels)),
                "measured_speedup": dense_ms / ms,
                "predicted_speedup": float(latency_model.predict(space.dense_candidate())[0]
                                           / latency_model.predict(levels)[0]),
            })
        print(f"{name} batch {batch}: spearman {rho:.3f} (flops alone {rho_flops:.3f})", flush=True)
    return accuracy_rows, speedup_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="digitnet:8:1,resnet20:32:3",
                        help="comma-separated name:image_size:channels")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    accuracy, speedup = [], []
    for spec in args.models.split(","):
        name, size, channels = spec.split(":")
        a, s = study_model(name, int(size), int(channels), args)
        accuracy += a
        speedup += s
    RESULTS.mkdir(parents=True, exist_ok=True)
    accuracy_table, speedup_table = pd.DataFrame(accuracy), pd.DataFrame(speedup)
    accuracy_table.to_csv(RESULTS / "latency_model.csv", index=False)
    speedup_table.to_csv(RESULTS / "latency_speedup.csv", index=False)
    text = "\n".join([
        "# Latency model: per-layer tables against end-to-end measurement",
        "",
        *command_and_machine("latency_model.py"),
        "",
        "## Rank correlation, random candidates",
        "",
        "`spearman_table`: predicted (tables) against measured latency; `spearman_flops`: FLOPs alone against "
        "measured, for comparison. `scale`, `offset_ms`: the end-to-end calibration.",
        "",
        markdown(accuracy_table),
        "",
        "## Speed-up against FLOPs reduction, uniform allocations",
        "",
        markdown(speedup_table),
        "",
    ])
    (RESULTS / "latency_model.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
