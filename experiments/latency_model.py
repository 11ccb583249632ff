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

With ``--front-runs RUN_DIR ...``, the members of those runs' Pareto fronts too: each is
materialised from its run's dense model and its speed-up measured against its FLOPs
reduction (``results/latency_front_speedup.md``; ``--skip-random`` for that part alone).

    python experiments/latency_model.py --models digitnet:8:1,resnet20:32:3 --candidates 30 --threads 1
    python experiments/latency_model.py --skip-random --front-runs experiments/runs/flops0.15-random-s0 --threads 1
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

    norm_layers = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
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
        models = [build(c) for c in candidates]
        measured, remeasured = (np.array([measure_latency(m, shape, batch_size=batch, repeats=args.repeats).median_ms
                                          for m in models]) for _ in range(2))
        rho, _ = spearmanr(predicted, measured)
        rho_ceiling, _ = spearmanr(measured, remeasured)  # what measurement noise alone allows
        dense = space.dense_candidate()[None]
        norm_ms = sum(float(l.lookup(dense)[0]) for l in latency_model.layers if l.name in norm_layers)
        flops = space.relative_cost("flops", np.array(candidates))
        rho_flops, _ = spearmanr(flops, measured)
        accuracy_rows.append({
            "model": name, "input": f"{channels}x{image_size}x{image_size}", "batch": batch,
            "candidates": len(candidates), "spearman_table": rho, "spearman_flops": rho_flops,
            "spearman_remeasure": rho_ceiling,
            "norm_share": norm_ms / float(latency_model.layer_sum(dense)[0]),  # of the dense model's tables
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


def front_speedups(run_dir: Path, args) -> list[dict]:
    """Measured speed-up against FLOPs reduction of every member of a run's Pareto front."""
    from autoprune.api import open_run
    from autoprune.store.front import levels_of
    from autoprune.setup_run import prepare

    run = open_run(run_dir)
    prepared = prepare(run.config)
    dense, space, data = prepared.task.dense, prepared.space, prepared.task.data
    never = list(prepared.task.space_config.never_prune)
    example = data.example_input(1)
    front = run.front
    rows = []
    for batch in args.batch_sizes:
        dense_ms = measure_latency(dense, data.input_shape, batch_size=batch, repeats=args.repeats).median_ms
        for _, row in front.iterrows():
            levels = levels_of(row, space.group_names)
            model = materialize(dense, space, levels, example, never_prune=never)[0]
            ms = measure_latency(model, data.input_shape, batch_size=batch, repeats=args.repeats).median_ms
            flops_ratio = float(space.relative_cost("flops", levels))
            rows.append({"run": run_dir.name, "trial_id": int(row["trial_id"]), "batch": batch,
                         "accuracy": float(row["accuracy"]), "flops_ratio": flops_ratio,
                         "flops_reduction": 1.0 / flops_ratio, "measured_speedup": dense_ms / ms})
    print(f"{run_dir}: {len(front)} front members measured", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="digitnet:8:1,resnet20:32:3",
                        help="comma-separated name:image_size:channels")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--front-runs", type=Path, nargs="*", default=[],
                        help="run directories whose Pareto-front members to measure (speed-up against FLOPs)")
    parser.add_argument("--skip-random", action="store_true", help="only the --front-runs part")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    accuracy, speedup = [], []
    front_rows = [row for run_dir in args.front_runs for row in front_speedups(run_dir, args)]
    for spec in ([] if args.skip_random else args.models.split(",")):
        name, size, channels = spec.split(":")
        a, s = study_model(name, int(size), int(channels), args)
        accuracy += a
        speedup += s
    RESULTS.mkdir(parents=True, exist_ok=True)
    accuracy_table, speedup_table = pd.DataFrame(accuracy), pd.DataFrame(speedup)
    front_table = pd.DataFrame(front_rows)
    if front_rows:
        front_table.to_csv(RESULTS / "latency_front_speedup.csv", index=False)
        (RESULTS / "latency_front_speedup.md").write_text("\n".join([
            "# Pareto-front members: measured speed-up against FLOPs reduction",
            "",
            *command_and_machine("latency_model.py"),
            "",
            "Each member of each run's front, materialised from the run's dense model and timed against it "
            "(median of repeated runs after warm-up, eval mode) at each batch size.",
            "",
            markdown(front_table),
            "",
        ]))
    if args.skip_random:
        print(markdown(front_table))
        return
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
        "measured, for comparison. `spearman_remeasure`: the same candidates measured a second time against the "
        "first, the ceiling that measurement noise allows. `norm_share`: the part of the dense model's table sum "
        "spent in BatchNorm + activation. `scale`, `offset_ms`: the end-to-end calibration.",
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
