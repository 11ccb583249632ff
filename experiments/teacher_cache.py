"""How much faster is a distilled trial when the teacher's logits are cached? (issue 3)

The evaluator distils from the dense model. Training batches are not augmented, so the
teacher's logits are fixed per training sample; the evaluator remembers them as they are
first computed (``TeacherCache``), and since every candidate is retrained with the same
seed, later candidates draw the same batches and hardly run the dense model at all. At
aggressive budgets the student is a few percent of the teacher's FLOPs.

For each budget, random candidates (as a search draws them) are evaluated by two
evaluators, one caching and one not, alternately (so machine load hits both alike). We
report the first trial's seconds (which fills the cache), the median seconds of the
later ones, their ratio, and the largest difference in held-out loss (float rounding).

    python experiments/teacher_cache.py --data fashion-mnist --model digitnet \
        --budgets flops=0.05,flops=0.4 --candidates 8 --fidelity 100 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.evaluation.training import TrainConfig
from autoprune.space.analysis import build_search_space
from autoprune.space.budget import parse_budgets, resolve
from autoprune.tasks import prepare_task
from proxy_fidelity import candidates, command_and_machine, markdown

RESULTS = Path(__file__).parent / "results"


def study_budget(task, space, budget: str, args) -> dict:
    constraints = resolve(parse_budgets([budget]), space)
    todo = candidates(space, constraints, args.candidates, args.seed)
    never = list(task.space_config.never_prune)
    evaluators = {
        cache: Evaluator(dense=task.dense, data=task.data, space=space, never_prune=never,
                         config=EvaluatorConfig(fidelity=args.fidelity, measure_latency=False, device="cpu",
                                                train=TrainConfig(distill_weight=0.5), cache_teacher_logits=cache))
        for cache in (True, False)
    }
    seconds = {True: [], False: []}
    losses = {True: [], False: []}
    for i, levels in enumerate(todo):
        for cache in ((True, False) if i % 2 == 0 else (False, True)):
            start = time.perf_counter()
            metrics = evaluators[cache].run(levels, fidelity=args.fidelity, seed=args.seed).metrics
            seconds[cache].append(time.perf_counter() - start)
            losses[cache].append(metrics["loss"])
    cached, plain = np.median(seconds[True][1:]), np.median(seconds[False][1:])
    return {
        "budget": budget, "candidates": len(todo), "fidelity": args.fidelity,
        "flops_ratio": float(np.mean([space.relative_cost("flops", c) for c in todo])),
        "first_cached": seconds[True][0], "first_plain": seconds[False][0],
        "seconds_cached": cached, "seconds_plain": plain, "speedup": plain / cached,
        "teacher_samples": evaluators[True]._teacher_cache.computed,
        "max_loss_difference": float(np.max(np.abs(np.array(losses[True]) - np.array(losses[False])))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="digitnet")
    parser.add_argument("--budgets", type=lambda s: s.split(","), default=["flops=0.05", "flops=0.4"])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--fidelity", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="teacher_cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = prepare_task(model=args.model, data=args.data)
    never = list(task.space_config.never_prune)
    space = build_search_space(task.dense, task.example_input(), grid=task.space_config.grid, never_prune=never)
    rows = []
    for budget in args.budgets:
        rows.append(study_budget(task, space, budget, args))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / f"{args.name}.csv", index=False)
    text = "\n".join([
        "# Cached teacher logits: seconds per distilled trial",
        "",
        *command_and_machine("teacher_cache.py"),
        f"Task: {args.data} / {args.model}; {args.fidelity} retraining steps with distillation (weight 0.5) per "
        "trial; the two evaluators alternate over the same candidates. `first_*`: seconds of the first trial "
        "(which fills the cache); `seconds_*`: median of the later trials; `teacher_samples`: training samples "
        "the cached teacher was run on over all trials.",
        "",
        markdown(table),
        "",
    ])
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
