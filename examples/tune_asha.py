"""Pruning search on a Ray cluster through ``tune.Tuner`` with ASHA, imported into an autoprune run.

Each candidate is one Tune trial: autoprune's searcher suggests it (within the budget),
autoprune's evaluator retrains it and reports held-out accuracy every ``--report-every``
steps, and ASHA stops the candidates that trail at each rung, so the retraining steps go
to the promising ones. Tune's result table, loggers (CSV, JSON, TensorBoard; MLflow and
W&B callbacks where installed) and autoscaling apply as to any Tune run. At the end the
trials are imported into an autoprune run directory, where ``autoprune front`` and
``autoprune export`` work as after ``autoprune search``.

On this machine (a private Ray instance)::

    python examples/tune_asha.py --budget flops=0.3 --trials 16 --fidelity 40 --run-dir runs/tune-digits

On a cluster (``ray start --head`` on the head, ``ray start --address HEAD:6379`` on the
workers; every node with ``pip install 'autoprune[tune]'``), run it on the head::

    python examples/tune_asha.py --address auto --data fashion-mnist --model resnet20 \\
        --budget flops=0.05 --fidelity 200 --report-every 50 --trials 96 --concurrent 16 \\
        --storage-path /shared/ray_results --run-dir /shared/runs/tune-resnet20

The dense model is trained (or loaded from autoprune's cache) on the driver and shipped
to the workers once through Ray's object store.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger("autoprune.examples.tune_asha")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="Ray cluster to join ('auto', HOST:PORT); default: a "
                                                        "private local instance")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--model", default=None)
    parser.add_argument("--budget", action="append", default=None, help="as autoprune search's (repeatable)")
    parser.add_argument("--searcher", default="random", help="any autoprune searcher")
    parser.add_argument("--trials", type=int, default=16, help="Tune trials (num_samples)")
    parser.add_argument("--fidelity", type=int, default=40, help="retraining steps of a trial that is not stopped")
    parser.add_argument("--report-every", type=int, default=10, help="steps between held-out reports (ASHA rungs)")
    parser.add_argument("--grace", type=int, default=None, help="ASHA's grace period in steps [--report-every]")
    parser.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA keeps 1 in this many per rung")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage-path", default=None, help="Tune's results folder (shared storage on a cluster)")
    parser.add_argument("--run-dir", required=True, help="the autoprune run directory to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from autoprune.integrations.pruning import prepare_pruning
    from autoprune.integrations.tune import AutopruneSearch, import_results, make_trainable

    pruning = prepare_pruning(data=args.data, model=args.model, budget=args.budget or ["flops=0.4"],
                              fidelity=args.fidelity, seed=args.seed)
    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, logging_level="WARNING")
    search = AutopruneSearch.create(args.searcher, pruning=pruning)
    scheduler = ASHAScheduler(time_attr="steps", max_t=args.fidelity, grace_period=args.grace or args.report_every,
                              reduction_factor=args.reduction_factor)
    tuner = tune.Tuner(
        make_trainable(pruning, report_every=args.report_every, threads=args.threads),
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=args.trials,
                                    metric="accuracy", mode="max", max_concurrent_trials=args.concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=Path(args.run_dir).name, storage_path=args.storage_path, verbose=1),
    )
    results = tuner.fit()
    run = import_results(results, pruning=pruning, run_dir=args.run_dir, search=search)
    steps = sum(int(r.metrics.get("steps", 0)) for r in results if r.metrics)
    stopped = sum(int(r.metrics.get("steps", 0)) < args.fidelity for r in results if r.metrics)
    print(f"{len(results)} trials, {stopped} stopped early by ASHA, {steps} retraining steps in all "
          f"({steps / (len(results) * args.fidelity):.0%} of running every trial to the end)")
    print(run.front[["trial_id", "accuracy", "flops_ratio", "params_ratio"]].to_string(index=False))
    print(f"run directory: {run.path}  (autoprune front {run.path}; autoprune export {run.path} --out DIR)")
    return run.path


if __name__ == "__main__":
    main()
