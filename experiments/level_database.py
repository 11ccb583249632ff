"""Týr's level database against materialising from scratch, for the whole zoo.

For each model: what building the database costs once, what one candidate costs to
build by assembling from it and by materialising from scratch (deep copy, dependency
graph, importance, pruning), and what a training-free fitness evaluation costs in total
(build, BatchNorm recalibration on 8 batches, KL to the dense model on 256 held-out
inputs, the work of one ``tyr`` trial) with each. Random weights and random inputs: the
timings do not depend on what the weights are.

    python experiments/level_database.py --threads 1
    python experiments/level_database.py --models digitnet:8:1,resnet20:32:3 --candidates 10

Writes ``results/level_database.md`` and ``results/level_database.csv``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from torch import nn

from autoprune.models import build_model, model_family
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.level_database import LevelDatabase
from autoprune.space.materialize import materialize
from proxy_fidelity import command_and_machine, markdown

RESULTS = Path(__file__).resolve().parent / "results"
ZOO = "digitnet:8:1,resnet20:32:3,resnet56:32:3,vgg16_bn:32:3,mobilenetv2:32:3"


def fitness(model: torch.nn.Module, teacher_logits: torch.Tensor, calibration: list[torch.Tensor],
            held_out: torch.Tensor) -> float:
    """Tyr's training-free fitness: recalibrate BatchNorm, then KL to the dense predictions."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:  # cumulative statistics, as the evaluator recalibrates
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for batch in calibration:
            model(batch)
    with torch.no_grad():
        logits = model.eval()(held_out)
    return float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_logits, 1), log_target=True,
                          reduction="batchmean"))


def study_model(name: str, size: int, channels: int, args) -> dict:
    torch.manual_seed(args.seed)
    dense = build_model(name, in_channels=channels, image_size=size, num_classes=10).eval()
    x = torch.randn(1, channels, size, size)
    config = load_space_config(model_family(name))
    never_prune = list(config.never_prune)
    space = build_search_space(dense, x, grid=config.grid, never_prune=never_prune)
    started = time.perf_counter()
    database = LevelDatabase.build(dense, space, x, never_prune=never_prune)
    build_seconds = time.perf_counter() - started

    rng = np.random.default_rng(args.seed)
    candidates = rng.integers(0, space.n_levels, size=(args.candidates, space.n_groups))
    calibration = [torch.randn(64, channels, size, size) for _ in range(8)]
    held_out = torch.randn(256, channels, size, size)
    with torch.no_grad():
        teacher_logits = dense(held_out)
    timings: dict[str, list[float]] = {"assemble": [], "materialise": [], "fitness_db": [], "fitness_scratch": []}
    for levels in candidates:
        for label, make in (("assemble", lambda: database.assemble(levels)),
                            ("materialise", lambda: materialize(dense, space, levels, x, never_prune=never_prune))):
            t0 = time.perf_counter()
            model, _ = make()
            t1 = time.perf_counter()
            fitness(model, teacher_logits, calibration, held_out)
            t2 = time.perf_counter()
            timings[label].append((t1 - t0) * 1e3)
            timings["fitness_db" if label == "assemble" else "fitness_scratch"].append((t2 - t0) * 1e3)
    median = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "model": name, "input": f"{channels}x{size}x{size}", "groups": space.n_groups, "levels": space.n_levels,
        "candidates": args.candidates, "build_s": build_seconds,
        "materialise_ms": median["materialise"], "assemble_ms": median["assemble"],
        "build_speedup": median["materialise"] / median["assemble"],
        "fitness_scratch_ms": median["fitness_scratch"], "fitness_db_ms": median["fitness_db"],
        "fitness_speedup": median["fitness_scratch"] / median["fitness_db"],
        "break_even_trials": build_seconds * 1e3 / max(median["materialise"] - median["assemble"], 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=ZOO, help="comma-separated name:image_size:channels")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models.split(","):
        name, size, channels = spec.split(":")
        rows.append(study_model(name, int(size), int(channels), args))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "level_database.csv", index=False)
    text = "\n".join([
        "# Level database (Týr's supernet) against materialising each candidate from scratch",
        "",
        *command_and_machine("level_database.py"),
        "",
        "`build_s`: building the database once (importance scored once, `groups + levels` probe prunings, "
        "3 verification candidates). `materialise_ms` / `assemble_ms`: one candidate built. "
        "`fitness_*_ms`: one training-free fitness evaluation (build, BatchNorm recalibration on 8 batches "
        "of 64, KL to the dense model on 256 inputs), as a `tyr` trial costs. `break_even_trials`: candidates "
        "after which the database has paid for itself.",
        "",
        markdown(table),
        "",
    ])
    (RESULTS / "level_database.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
