"""The ``dp`` searcher's solve time and its additivity assumption (issue 17).

Two parts, each writing a table under ``experiments/results/``:

- ``--part scaling``: how the DP's solve time grows with groups x levels, on synthetic
  distortion curves (increasing, random) over the coupled costs of a plain chain of
  convolutions and of a CIFAR-style ResNet (stage groups shared by residual sums, inner
  groups per block, the downsampling triangle), FLOPs bounded at 30% of dense, 2000
  cost cells. Times are the median of ``--repeats`` solves.
- ``--part additivity``: a ``dp`` search on a real trained model (default resnet20 on
  the built-in digits data, the reduced size this machine allows) at each budget and
  distortion measure: its probes, the Spearman rank correlation of the additivity
  check (summed single-group curves against measured multi-group distortion), the DP's
  solve time and the held-out accuracy of its allocation at the full budget after the
  run's ``--fidelity`` retraining, next to ``global`` (magnitude, Taylor) and ``uniform``
  at the same budget.

The searcher comparison of issue 17 (Fashion-MNIST, resnet20, 3 seeds, 1000-step final
recipe) runs through ``searcher_comparison.py``, which knows ``dp`` and ``global``::

    python experiments/searcher_comparison.py --name searcher_comparison_resnet20_long \\
        --data fashion-mnist --model resnet20 --budgets flops=0.05,flops=0.15 \\
        --searchers dp,dp_mse,global,global_taylor \\
        --variant 'dp_mse={searcher: dp, distortion: mse}' \\
        --variant 'global_taylor={searcher: global, importance: taylor}' \\
        --seeds 0,1,2 --trials 480 --final-steps 1000 --threads 1

    python experiments/dp_global.py --part scaling
    python experiments/dp_global.py --part additivity --model resnet20 --data digits
    python experiments/dp_global.py --part additivity --model resnet20 --data fashion-mnist \
        --name dp_additivity_resnet20 --threads 1

``--part additivity`` journals each run's row in ``results/NAME.jsonl``; a killed study
run again keeps those rows and runs the rest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from autoprune.searchers.dp_solver import problem_costs, solve
from autoprune.space.levels import LevelGrid
from autoprune.testing.synthetic import chain_space, make_problem, residual_space
from proxy_fidelity import command_and_machine, command_line, markdown

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"


def scaling(args: argparse.Namespace) -> None:
    rows = []
    for levels in args.levels:
        grid = LevelGrid.from_step(step=1 / levels, min_ratio=1 / levels)
        for groups in args.groups:
            for shape in ("chain", "resnet"):
                if shape == "chain":
                    space = chain_space([64] * groups, grid, positions=16)
                else:
                    stages = max(1, groups // 4)  # 3 blocks per stage: 4 groups each
                    space = residual_space([64] * stages, grid, blocks=3, positions=16)
                problem = make_problem(space, 0.3)
                rng = np.random.default_rng(0)
                curves = np.cumsum(rng.uniform(0, 1, size=(space.n_groups, space.n_levels)), axis=1)
                curves[:, 0] = 0.0
                times, cpu = [], []
                for _ in range(args.repeats):
                    started, started_cpu = time.perf_counter(), time.process_time()
                    solution = solve(curves, problem_costs(problem), problem.constraints.limits, buckets=args.buckets)
                    levels_found, _ = solution.allocate(problem.constraints.limits)
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - started_cpu)
                assert problem.feasible(levels_found)[0]
                rows.append({"shape": shape, "groups": space.n_groups, "levels": space.n_levels,
                             "groups_x_levels": space.n_groups * space.n_levels, "frontier": solution.frontier,
                             "buckets": args.buckets, "cpu_seconds": float(np.median(cpu)),
                             "wall_seconds": float(np.median(times))})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).sort_values(["shape", "levels", "groups"])
    table.to_csv(RESULTS / "dp_scaling.csv", index=False)
    text = "\n".join([
        "# DP solve time against groups x levels (synthetic curves)",
        "",
        *command_and_machine("dp_global.py", [command_line("dp_global.py")]),
        "Coupled FLOPs of a chain of 64-channel convolutions (each layer's cost the product of its input and "
        "output groups' kept channels) and of a CIFAR-style ResNet (3 blocks per stage: a stage group shared "
        "by the residual sums and one inner group per block; the first block of a later stage couples the "
        "previous stage, its inner group and the new stage). Budget flops=0.3; curves random and increasing. "
        "`frontier`: the most groups' levels the DP state holds while a group is added (the group included); "
        f"`cpu_seconds`, `wall_seconds`: median of {args.repeats} solves (tables and the way back to the levels "
        "included; CPU time of the process, all its threads); on this shared machine the CPU time is the one to read, the wall time "
        "shows how busy it was. The cost axis has `buckets` cells asked for, fewer where a wide state would not fit in "
        "20 million cells (the solver's limit, 160 MB).",
        "",
        markdown(table),
        "",
    ])
    (RESULTS / "dp_scaling.md").write_text(text)
    print(text)


def additivity(args: argparse.Namespace) -> None:
    import autoprune

    journal = RESULTS / f"{args.name}.jsonl"
    kept = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    rows = [{k: v for k, v in r.items() if k != "report"} for r in kept]
    done = {(r["budget"], r["searcher"]) for r in rows}
    for budget in args.budgets:
        runs = [("dp", {"distortion": measure, "additivity_checks": args.checks}, f"dp_{measure}")
                for measure in args.measures]
        runs += [("global", {"importance": "magnitude"}, "global"), ("global", {"importance": "taylor"},
                                                                        "global_taylor"), ("uniform", {}, "uniform")]
        for searcher, options, label in runs:
            if (budget, label) in done:  # journaled by an earlier, killed process
                continue
            path = RUNS / f"dp_global-{args.model}-{args.data}-{budget.replace('=', '')}-{label}"
            if path.exists():
                shutil.rmtree(path)
            started = time.perf_counter()
            run = autoprune.search(run_dir=path, progress=False, model=args.model, data=args.data, budget=[budget],
                                   searcher=searcher, searcher_options=options, trials=args.trials,
                                   fidelity=args.fidelity, seed=args.seed, latency_repeats=0)
            seconds = time.perf_counter() - started
            table = run.trials
            trials = table[table["kind"] == "trial"]
            first = trials.iloc[0]  # dp: its allocation at the full budget; global, uniform: the one candidate
            report = run.info.get("searcher_report", {})
            check = report.get("additivity", {})
            rows.append({
                "budget": budget, "searcher": label, "measurements": int((table["kind"] == "measurement").sum()),
                "trials": len(trials), "spearman": check.get("spearman"), "checked": check.get("checked"),
                "solve_seconds": report.get("solve_seconds"), "flops_ratio": float(first["flops_ratio"]),
                "held_out_acc": float(first["accuracy"]), "best_held_out_acc": float(trials["accuracy"].max()),
                "search_seconds": seconds,
            })
            print(rows[-1], flush=True)
            with open(journal, "a") as handle:
                handle.write(json.dumps({**rows[-1], "report": report}) + "\n")
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / f"{args.name}.csv", index=False)
    text = "\n".join([
        "# dp's additivity check on a real model, and its allocation next to global and uniform",
        "",
        *command_and_machine("dp_global.py", [command_line("dp_global.py")]),
        f"Task: {args.data} / {args.model} (dense model trained by the zoo recipe), seed {args.seed}. `dp` probes "
        "every group at every distinct kept count with no retraining (BatchNorm recalibrated) on up to 512 held-out "
        f"samples, then measures {args.checks} random multi-group candidates; `spearman` is the rank correlation of "
        "their measured distortion with the sum of their groups' single-group distortions. `held_out_acc`: "
        f"held-out accuracy of the first candidate (dp: its allocation at the full budget) after {args.fidelity} "
        "distilled retraining steps; `best_held_out_acc`: best over the run's trials (dp also proposes "
        "allocations at 0.9 ... 0.5 of the budget). One seed, held-out data, short retraining: "
        "not the issue's comparison protocol (see searcher_comparison.py).",
        "",
        markdown(table),
        "",
    ])
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["scaling", "additivity"], required=True)
    parser.add_argument("--groups", type=lambda s: [int(v) for v in s.split(",")], default=[12, 24, 48, 96, 192, 384])
    parser.add_argument("--levels", type=lambda s: [int(v) for v in s.split(",")], default=[8, 16, 32])
    parser.add_argument("--buckets", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--budgets", type=lambda s: s.split(","), default=["flops=0.05", "flops=0.15"])
    parser.add_argument("--measures", type=lambda s: s.split(","), default=["kl", "mse"])
    parser.add_argument("--checks", type=int, default=16)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--fidelity", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--name", default="dp_additivity",
                        help="additivity: results file stem; rows already in its .jsonl are kept (delete it to "
                             "start over)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part == "scaling":
        scaling(args)
    else:
        additivity(args)


if __name__ == "__main__":
    main()
