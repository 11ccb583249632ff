"""A searcher under Ray Tune's ASHA, as one more row of a searcher comparison (issue 21).

``searcher_comparison.py`` runs autoprune's own search loop. This script runs the same
task through ``tune.Tuner`` instead: an autoprune searcher suggests candidates
(:class:`~autoprune.integrations.tune.AutopruneSearch`), the evaluator retrains them as a
Tune trainable that reports held-out accuracy every ``--report-every`` steps, and ASHA
stops the candidates that trail at each rung, so most retraining steps go to the
promising ones. The Tune run is imported into an autoprune run directory
(:func:`~autoprune.integrations.tune.import_results`); its found model is the best
held-out accuracy among the trials that reached ``--fidelity`` steps (the searcher's
fitness, as ``searcher_comparison.found_row`` picks it), retrained with the study's common
final recipe and scored on the test split. The row joins the study's journal
(``--name``), so the study's table shows it beside the other searchers;
``search_steps`` counts the steps every trial really trained (stopped ones included).

A seed whose run directory exists is not searched again (its Tune run is imported, and
the search's seconds are kept beside it); a seed killed during its Tune run starts it
again (Tune experiment restore is not used).

    python experiments/tune_comparison.py --name searcher_comparison_resnet20_s4 \\
        --data fashion-mnist --model resnet20 --budget flops=0.05 --label random_asha \\
        --searcher random --trials 112 --fidelity 200 --report-every 25 --seeds 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

import autoprune
from autoprune.store.front import levels_of
from proxy_fidelity import command_line
from searcher_comparison import (RESULTS, RUNS, add_final_recipe_arguments, final_accuracy, found_row, read_journal,
                                 rewrite_summary)

logger = logging.getLogger("experiments.tune_comparison")

#: where a Tune-searched run keeps the wall-clock seconds of its search (import writes none)
SECONDS_FILE = "tune_search_seconds.json"


def tune_search(args, seed: int, path: Path) -> autoprune.Run:
    """Search ``args.budget`` through ``tune.Tuner`` with ASHA, imported into ``path``."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from autoprune.integrations.pruning import prepare_pruning
    from autoprune.integrations.tune import AutopruneSearch, import_results, make_trainable

    start = time.perf_counter()
    pruning = prepare_pruning(data=args.data, model=args.model, budget=[args.budget], fidelity=args.fidelity,
                              seed=seed, threads=args.threads)
    if not ray.is_initialized():
        ray.init(num_cpus=args.threads, include_dashboard=False, logging_level="WARNING")
    search = AutopruneSearch.create(args.searcher, pruning=pruning)
    scheduler = ASHAScheduler(time_attr="steps", max_t=args.fidelity, grace_period=args.grace or args.report_every,
                              reduction_factor=args.reduction_factor)
    tuner = tune.Tuner(
        make_trainable(pruning, report_every=args.report_every, threads=args.threads),
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=args.trials,
                                    metric="accuracy", mode="max", max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name=path.name, storage_path=str((RUNS / "ray_results").resolve()), verbose=0),
    )
    results = tuner.fit()
    run = import_results(results, pruning=pruning, run_dir=path, search=search)
    (path / SECONDS_FILE).write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return run


def tune_row(args, seed: int) -> dict:
    path = RUNS / f"{args.name}-{args.budget.replace('=', '')}-{args.label}-s{seed}"
    if (path / SECONDS_FILE).exists():
        run = autoprune.Run(path)
    else:
        if path.exists():  # an import that did not finish: search again
            raise SystemExit(f"{path} exists without {SECONDS_FILE}: remove it to search this seed again")
        run = tune_search(args, seed, path)
    table = run.trials
    row = found_row(run)
    levels = levels_of(row, run.space.group_names)
    task = autoprune_task(args)
    accuracy, _, final_seconds = final_accuracy(task, run, levels, args, seed)
    stopped = int((table["steps"].fillna(0) < args.fidelity).sum())
    return {
        "budget": args.budget, "searcher": args.label, "seed": seed, "levels": [int(v) for v in levels],
        "trial_id": int(row["trial_id"]), "flops_ratio": float(row["flops_ratio"]),
        "trials": int(len(table)), "search_steps": int(table["steps"].fillna(0).sum()),
        "search_seconds": float(json.loads((path / SECONDS_FILE).read_text())["seconds"]),
        "final_test_acc": float(accuracy), "final_seconds": final_seconds, "stopped_early": stopped,
        "command": command_line("tune_comparison.py"),
    }


_TASK: dict[tuple[str, str], object] = {}


def autoprune_task(args):
    """The study's task (data and dense model), loaded once per process."""
    from autoprune.tasks import prepare_task

    key = (args.data, args.model)
    if key not in _TASK:
        _TASK[key] = prepare_task(model=args.model, data=args.data)
    return _TASK[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the searcher_comparison study whose journal gets the rows")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--budget", default="flops=0.05")
    parser.add_argument("--label", required=True, help="the row's searcher name in the study's table")
    parser.add_argument("--searcher", default="random", help="the autoprune searcher that suggests candidates")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    parser.add_argument("--trials", type=int, required=True, help="Tune trials (num_samples)")
    parser.add_argument("--fidelity", type=int, default=200, help="retraining steps of a trial ASHA never stops")
    parser.add_argument("--report-every", type=int, default=25, help="steps between held-out reports")
    parser.add_argument("--grace", type=int, default=None, help="ASHA's grace period in steps [--report-every]")
    parser.add_argument("--reduction-factor", type=float, default=2.0)
    add_final_recipe_arguments(parser)
    args = parser.parse_args()
    args.threads = args.threads or 1
    torch.set_num_threads(args.threads)
    journal = RESULTS / f"{args.name}.jsonl"
    for seed in args.seeds:
        if any((r["budget"], r["searcher"], r["seed"]) == (args.budget, args.label, seed) for r in read_journal(journal)):
            continue
        row = tune_row(args, seed)
        with open(journal, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{args.budget} {args.label} seed {seed}: final test {row['final_test_acc']:.4f} (flops "
              f"{row['flops_ratio']:.4f}, {row['search_steps']} search steps, {row['stopped_early']} of "
              f"{row['trials']} trials stopped early, search {row['search_seconds']:.0f} s)", flush=True)
        rewrite_summary(args.name)


if __name__ == "__main__":
    main()
