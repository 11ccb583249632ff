"""Do searched allocations beat uniform pruning at the same FLOPs? (issue 5)

Each searcher (``uniform``, ``uniform_fine``, ``darwin``, ``tyr``, ``random``) searches
the same task at each budget with the same number of trials, per seed. The model each
one *found* (its own notion of best, below) is then retrained with one common final
recipe and scored on the test split, which no searcher ever saw. We report final test accuracy (mean, spread
over seeds) and what the search cost (seconds and training steps).

The found model of a run, among trials that succeeded within the budget and reached the
run's last stage (highest fidelity, then most scoring samples; staged searchers score
early stages on less training and data, which are not comparable):

- ``darwin``: its last parent (``--pick searcher``); with a single draw of training
  randomness (``fresh_draws: false``) that is also the lowest held-out loss (its fitness);
- ``tyr``: lowest KL divergence to the dense predictions (its fitness);
- ``random``, ``uniform``, ``global``, ``optuna``: highest held-out accuracy (``global``, ``uniform``: their
  one trial; ``optuna`` minimises held-out error by default);
- ``dp``: highest held-out accuracy among its allocations (at the budget and at fractions below
  it); its probes are measurements, not trials, and never found.

``uniform_fine`` is the uniform searcher on a level grid of step 1/128: on the space's
own grid, uniform pruning may stop well short of the budget (3.6% of the FLOPs under
flops=0.05 on a 1/16 grid), so the fair "same FLOPs" baseline is this one.

``--variant NAME=YAML`` adds a searcher under its own name with options, e.g.
``--variant 'darwin_400={searcher: darwin, stage_steps: [10, 50, 200, 400]}'``; a
variant ranks its trials by its searcher's fitness. The key ``level_step`` is not a
searcher option: it searches a space whose level grid has that step instead
(``{searcher: darwin, level_step: 0.03125}``).

Every (seed, budget, searcher) is a run directory under ``experiments/runs/`` and one
line of ``experiments/results/searcher_comparison.jsonl``, written when its final
retraining ends; a killed study resumes where it stopped (run the same command again).
Processes running other seeds of the same study may share the journal; each writes the
summary of all rows when it ends (``--summary-only`` rewrites it from the journal), with
the command of every process that added rows.

    python experiments/searcher_comparison.py --data fashion-mnist --model digitnet \
        --budgets flops=0.05,flops=0.15 --seeds 0,1,2 --trials 32 --final-steps 1000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

import autoprune
from autoprune.store.front import levels_of
from autoprune.evaluation.training import TrainConfig, measure, recalibrate_batchnorm, train
from autoprune.space.materialize import materialize
from autoprune.store.front import last_stage
from autoprune.tasks import prepare_task
from proxy_fidelity import command_and_machine, command_line, markdown

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"
DEFAULT_NAME = "searcher_comparison"

#: (column, ascending) each searcher ranks its last-stage trials by
FITNESS = {"darwin": ("loss", True), "tyr": ("kl_to_dense", True),
           "random": ("accuracy", False), "uniform": ("accuracy", False), "uniform_fine": ("accuracy", False),
           "dp": ("accuracy", False), "global": ("accuracy", False), "optuna": ("accuracy", False)}

#: the level step of ``uniform_fine``: uniform pruning on a grid fine enough to use nearly
#: all of the budget (on the default 1/16 grid, uniform stops at 3.6% of the FLOPs under
#: flops=0.05, while searchers spend nearly 5%: part of their lead would be FLOPs)
FINE_STEP = 1 / 128


def space_file(task, step: float) -> Path:
    """The task's search-space settings with another level step, as a YAML file for ``--space``."""
    grid = task.space_config.grid
    path = RUNS / f"space-step{round(1 / step)}-{task.model_spec.name}.yaml"
    RUNS.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"level_step": step, "min_keep_ratio": float(min(grid.keep_ratios)),
                                    "min_channels": grid.min_channels, "round_to": grid.round_to,
                                    "never_prune": list(task.space_config.never_prune)}))
    return path


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME=YAML mapping`` (with a ``searcher`` key) from ``--variant``."""
    name, _, body = text.partition("=")
    options = yaml.safe_load(body) if body else None
    searchers = sorted(set(FITNESS) - {"uniform_fine"})  # uniform_fine is uniform on another space
    if not name or not isinstance(options, dict) or options.get("searcher") not in searchers:
        raise SystemExit(f"--variant wants NAME={{searcher: one of {searchers}, option: value, ...}}, got {text!r}")
    return name.strip(), options


def found_row(run: autoprune.Run) -> pd.Series:
    """The trial the run's searcher would hand the user: its own choice where it has one,
    else its best at the run's last stage."""
    table = run.trials
    table = table[table["kind"] == "trial"]  # a searcher's probes (dp's) are never found models
    if run.info.get("incumbent") is not None:
        return run.pick("searcher")
    usable = table[(table["status"] == "ok") & table["within_budget"]]
    if usable.empty:
        raise RuntimeError(f"{run.path}: no successful trial within the budget")
    top = last_stage(usable)
    column, ascending = FITNESS[run.config.searcher]
    return top.sort_values(column, ascending=ascending).iloc[0]


def search_run(args, task, budget: str, searcher: str, seed: int) -> autoprune.Run:
    prefix = "" if args.name == DEFAULT_NAME else f"{args.name}-"  # studies of other sizes keep their own runs
    path = RUNS / f"{prefix}{budget.replace('=', '')}-{searcher}-s{seed}"
    if (path / "run.json").exists():
        return autoprune.resume(path, trials=args.trials, progress=False)
    if searcher == "uniform_fine":
        extra = {"searcher": "uniform", "space_file": str(space_file(task, FINE_STEP))}
    elif searcher in args.variants:
        options = dict(args.variants[searcher])
        extra = {"searcher": options.pop("searcher"), "searcher_options": options}
        if "level_step" in options:
            extra["space_file"] = str(space_file(task, float(options.pop("level_step"))))
    else:
        extra = {}
    return autoprune.search(run_dir=path, progress=False, data=args.data, model=args.model, budget=[budget],
                            **{"searcher": searcher, **extra}, trials=args.trials, seed=seed)


def final_accuracy(task, run: autoprune.Run, levels: np.ndarray, args, seed: int) -> tuple[float, float, float]:
    """Test and held-out accuracy after the common final recipe, and its seconds."""
    start = time.perf_counter()
    model, _ = materialize(task.dense, run.space, levels, task.example_input(),
                           never_prune=list(task.space_config.never_prune))
    recalibrate_batchnorm(model, task.data, batches=8, batch_size=args.batch_size, seed=seed)
    train(model, task.data, steps=args.final_steps, config=TrainConfig(lr=args.lr, batch_size=args.batch_size),
          seed=seed)
    accuracy, _ = measure(model, task.data, task.data.test)
    held_out, _ = measure(model, task.data, task.data.val)
    return accuracy, held_out, time.perf_counter() - start


def add_final_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The common final recipe's options (and torch threads), shared by the studies that
    retrain found models as this one does."""
    parser.add_argument("--final-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def read_journal(path: Path) -> list[dict]:
    """A study's journaled rows (none before its first)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def study_row(args, task, budget: str, searcher: str, seed: int) -> dict:
    run = search_run(args, task, budget, searcher, seed)
    table = run.trials
    row = found_row(run)
    levels = levels_of(row, run.space.group_names)
    accuracy, _, final_seconds = final_accuracy(task, run, levels, args, seed)
    additivity = (run.info.get("searcher_report") or {}).get("additivity") or {}  # dp's check
    return {
        "budget": budget, "searcher": searcher, "seed": seed, "levels": [int(v) for v in levels],
        "trial_id": int(row["trial_id"]), "flops_ratio": float(row["flops_ratio"]),
        "trials": int(len(table)), "search_steps": int(table["steps"].fillna(0).sum()),
        "search_seconds": float(sum(s["seconds"] for s in run.info["sessions"])),
        "final_test_acc": float(accuracy), "final_seconds": final_seconds,
        "command": command_line("searcher_comparison.py"),
        **({"additivity_spearman": additivity.get("spearman"), "additivity_checked": additivity.get("checked")}
           if additivity else {}),
    }


def trials_text(rows: list[dict], args) -> str:
    """How many trials the searches had: one number, or a pointer to the table when the
    study's commands asked for different numbers (``trials`` counts what each run had)."""
    asked = {int(a) for r in rows for a in _option(r.get("command", ""), "--trials")}
    if len(asked) > 1:
        return f"{', '.join(map(str, sorted(asked)))} trials asked by the commands (the `trials` column: what each run had)"
    return f"{args.trials} trials per search (uniform needs one)"


def _option(command: str, flag: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]


def summarise(rows: list[dict], args) -> tuple[pd.DataFrame, str]:
    table = pd.DataFrame(rows)
    # baselines first in each budget, then searchers in the order rows arrived
    order = {name: i for i, name in enumerate(dict.fromkeys(["uniform", "uniform_fine", *table["searcher"]]))}
    table = table.sort_values(["budget", "searcher"], key=lambda c: c.map(order) if c.name == "searcher" else c,
                              kind="stable")
    summary = (table.groupby(["budget", "searcher"], sort=False)
               .agg(seeds=("seed", "count"), acc_mean=("final_test_acc", "mean"), acc_std=("final_test_acc", "std"),
                    acc_min=("final_test_acc", "min"), acc_max=("final_test_acc", "max"),
                    flops_ratio=("flops_ratio", "mean"), trials=("trials", "mean"),
                    search_steps=("search_steps", "mean"), search_seconds=("search_seconds", "mean"))
               .reset_index())
    for baseline in ("uniform_fine", "uniform"):  # columns end up in this order: uniform, then uniform_fine
        if baseline in set(summary["searcher"]):
            means = summary[summary["searcher"] == baseline].set_index("budget")["acc_mean"]
            summary.insert(5, f"vs_{baseline}_points", 100 * (summary["acc_mean"] - summary["budget"].map(means)))
    lines = [
        "# Searchers compared: final test accuracy of the model each one found",
        "",
        *command_and_machine("searcher_comparison.py", list(dict.fromkeys(
            r.get("command", command_line("searcher_comparison.py")) for r in rows))),
        f"Task: {args.data} / {args.model}; {trials_text(rows, args)}; every found model "
        f"retrained {args.final_steps} steps (batch {args.batch_size}, lr {args.lr}, cosine) from the pruned dense "
        "weights, then scored on the test split. `acc_std` is over seeds (NaN with one seed); "
        "`vs_uniform_points` is the mean's difference to uniform's, in points; `uniform_fine` is uniform pruning "
        f"on a level grid of step 1/{round(1 / FINE_STEP)} (instead of the space's), which uses nearly all of "
        "the budget, and `vs_uniform_fine_points` the difference to it; `search_steps` sums every trial's "
        "retraining steps.",
        "",
        markdown(summary),
        "",
        *additivity_lines(table),
    ]
    return summary, "\n".join(lines)


def additivity_lines(table: pd.DataFrame) -> list[str]:
    """dp's additivity check per run: the rank correlation of each multi-group candidate's
    measured distortion with the sum of its groups' single-group curves."""
    if "additivity_spearman" not in table or table["additivity_spearman"].isna().all():
        return []
    lines = ["dp's additivity check (Spearman between measured distortion and the summed single-group curves, "
             "over the multi-group candidates each run measured):", ""]
    for _, row in table.dropna(subset=["additivity_spearman"]).iterrows():
        lines.append(f"- {row['budget']} {row['searcher']} seed {row['seed']}: {row['additivity_spearman']:.3f} "
                     f"over {int(row['additivity_checked'])} candidates")
    return [*lines, ""]


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="digitnet")
    parser.add_argument("--budgets", type=lambda s: s.split(","), default=["flops=0.05", "flops=0.15"])
    parser.add_argument("--searchers", type=lambda s: s.split(","),
                        default=["uniform", "uniform_fine", "darwin", "tyr", "random"])
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=32)
    add_final_recipe_arguments(parser)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=YAML",
                        help="a searcher with options under its own name (add NAME to --searchers)")
    parser.add_argument("--summary-only", action="store_true",
                        help="rewrite the tables from the study's journal and run nothing (the task and recipe "
                             "described are those of the journal's first command)")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="results file stem; another name keeps its own run directories")
    return parser


def main() -> None:
    parser = argument_parser()
    args = parser.parse_args()
    args.variants = dict(parse_variant(v) for v in args.variant)
    unknown = [s for s in args.searchers if s not in FITNESS and s not in args.variants]
    if unknown:
        raise SystemExit(f"unknown searchers {unknown}: use {sorted(FITNESS)} or a --variant name")
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    journal = RESULTS / f"{args.name}.jsonl"
    rows = read_journal(journal)
    if args.summary_only:
        if not rows:
            raise SystemExit(f"{journal} holds no rows yet")
        print(rewrite_summary(args.name, parser))
        return
    done = {(r["budget"], r["searcher"], r["seed"]) for r in rows}
    task = prepare_task(model=args.model, data=args.data)
    for budget in args.budgets:
        for seed in args.seeds:
            for searcher in args.searchers:
                if (budget, searcher, seed) in done:
                    continue
                row = study_row(args, task, budget, searcher, seed)
                with open(journal, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                rows.append(row)
                print(f"{budget} {searcher} seed {seed}: final test {row['final_test_acc']:.4f} "
                      f"(flops {row['flops_ratio']:.4f}, search {row['search_seconds']:.0f} s)", flush=True)
                write_summary(rows, args)
    # again at the end: another process may have added rows for other seeds meanwhile
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    print(write_summary(rows, args))


def rewrite_summary(name: str, parser: argparse.ArgumentParser | None = None) -> str:
    """Rewrite study ``name``'s tables from its journal, describing the task and recipe of
    the journal's first command (other scripts that add rows to a study call this)."""
    rows = read_journal(RESULTS / f"{name}.jsonl")
    parser = parser or argument_parser()
    ours = [shlex.split(r["command"]) for r in rows if "experiments/searcher_comparison.py" in r["command"]]
    if not ours:
        raise SystemExit(f"study {name!r} has no row of searcher_comparison.py to describe its task and recipe")
    study = parser.parse_args([*ours[0][2:], "--name", name])
    if study.threads:
        torch.set_num_threads(study.threads)
    return write_summary(rows, study)


def write_summary(rows: list[dict], args) -> str:
    summary, text = summarise(rows, args)
    summary.to_csv(RESULTS / f"{args.name}.csv", index=False)
    (RESULTS / f"{args.name}.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
