"""How much faster is a distilled language-model trial when the dense targets are kept? (issue 16)

The language-model evaluator distils every candidate from the dense model. Its training
sequences are not augmented, so the dense model's next-token targets of a sequence never
change; :class:`autoprune.llm.lm_evaluator.TrainTargets` keeps them (up to
``teacher_cache_mb``), and since candidates are retrained with the same seed, later
candidates draw the same batches and the teacher does not run again.

Two evaluators on the same model and text, one keeping targets (the default 1024 MB) and
one not (``teacher_cache_mb=0``), evaluate the same random candidates alternately (so
machine load hits both alike), each ``--fidelity`` distillation steps and a small
held-out score. Reported per evaluator: the first trial's seconds (which fills the
cache), the median seconds of the later ones, their ratio, and the largest difference in
held-out KL between the two (the targets are the same numbers, so it should be rounding).

    AUTOPRUNE_CACHE=/work/assets/cache python experiments/llm_teacher_cache.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autoprune.llm.evaluation import SpaceLMEvaluator
from autoprune.llm.lm_evaluator import LMEvaluatorConfig
from autoprune.llm.space import build_lm_space
from autoprune.llm.task import prepare_language_task
from llm_comparison import ASSETS, DEFAULT_MODEL, bench_text
from proxy_fidelity import command_and_machine, markdown

RESULTS = Path(__file__).parent / "results"


def evaluator(task, space, args: argparse.Namespace, cache_mb: int) -> SpaceLMEvaluator:  # noqa: ANN001
    config = LMEvaluatorConfig(fidelity=args.fidelity, batch_size=args.batch_size, measure_latency=False,
                               device="cpu", teacher_cache_mb=cache_mb)
    return SpaceLMEvaluator(dense=task.dense, data=task.data, space=space, config=config, importance="magnitude")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--fidelity", type=int, default=6, help="distillation steps per trial")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4, help="per evaluator")
    parser.add_argument("--eval-samples", type=int, default=4, help="held-out sequences scored per trial")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_teacher_cache.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = prepare_language_task(model=f"hf:{args.model}", data=f"text:{bench_text(ASSETS) / 'train'}",
                                 seq_len=args.seq_len, space_file=None)
    space = build_lm_space(task.dense, grid=task.space_config.grid, seq_len=args.seq_len)
    rng = np.random.default_rng(0)
    # levels of the middle of the grid, as a search at params=0.6 draws them (no removed sub-block)
    candidates = rng.integers(space.n_levels // 4, space.n_levels // 2, size=(args.candidates, space.n_groups))
    evaluators = {"kept": evaluator(task, space, args, 1024), "not kept": evaluator(task, space, args, 0)}
    seconds: dict[str, list[float]] = {name: [] for name in evaluators}
    kl: dict[str, list[float]] = {name: [] for name in evaluators}
    for levels in candidates:
        for name, scorer in evaluators.items():
            started = time.perf_counter()
            result = scorer.run(levels, fidelity=args.fidelity, seed=0, eval_samples=args.eval_samples)
            seconds[name].append(time.perf_counter() - started)
            kl[name].append(float(result.metrics["kl_to_dense"]))
            print(name, round(seconds[name][-1], 1), "s", flush=True)
    params = space.relative_cost("params", candidates)
    rows = [{"targets": name, "first_trial_s": times[0], "later_trials_median_s": statistics.median(times[1:]),
             "teacher_sequences": evaluators[name].train_targets.teacher_sequences} for name, times in seconds.items()]
    speedup = rows[1]["later_trials_median_s"] / rows[0]["later_trials_median_s"]
    lines = [
        "# Distillation targets kept: seconds per language-model trial",
        "",
        *command_and_machine("llm_teacher_cache.py"),
        "",
        f"SmolLM2-135M ({args.model.name}), text of experiments/llm_comparison.py's train split, {args.seq_len}-token "
        f"sequences; {args.candidates} random candidates (params {params.min():.2f}-{params.max():.2f} of the "
        f"non-embedding params), each distilled {args.fidelity} steps of batch {args.batch_size} and scored on "
        f"{args.eval_samples} held-out sequences, by two evaluators in turn. `teacher_sequences`: sequences the dense "
        "model ran on for targets.",
        "",
        markdown(pd.DataFrame(rows)),
        "",
        f"Later trials are {speedup:.2f}x faster with targets kept; the largest difference in held-out KL between "
        f"the two: {max(abs(a - b) for a, b in zip(kl['kept'], kl['not kept'])):.2e}.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
