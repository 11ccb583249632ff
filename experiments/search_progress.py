"""Does a longer search find a better model? darwin's choice along a run, retrained (issue 5).

For each darwin run and each trial count N of ``--at``, the candidate darwin would hand
over after its first N trials (its parent then: the best last-stage candidate so far by
its own fitness, averaged over draws; the parent carries its score into every final
stage, so the running best is the parent) is retrained with the common final recipe of
``searcher_comparison.py`` (same seed, so the last point reproduces that study's number)
and scored on the test split. A curve still rising at the run's end says more trials
would buy more; a flat one that the search has found what its proxy can tell apart.

Runs with ``fresh_draws`` are refused (their parent is scored again each generation, so
the running best is not their choice). The study also replays darwin's ``patience``
option on each run: the search is the same until the parent has won ``patience``
generations in a row, so where it would have stopped, and with which parent, can be read
off the journal; that parent is retrained too. Rows are journaled; a killed study resumes.

    python experiments/search_progress.py --threads 1 --at 34,124,244,484,724,964 \\
        --runs experiments/runs/searcher_comparison_resnet20_960-flops0.05-darwin-s0 ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import autoprune
from autoprune.store.front import levels_of
from autoprune.store.front import last_stage, mean_over_draws
from autoprune.tasks import prepare_task
from finalist_retraining import group_of
from proxy_fidelity import command_and_machine, command_line, markdown
from searcher_comparison import FITNESS, add_final_recipe_arguments, final_accuracy, read_journal

RESULTS = Path(__file__).parent / "results"


def choice_after(run: autoprune.Run, trials: int) -> pd.Series | None:
    """darwin's choice after its first ``trials`` trials (None before any last-stage score)."""
    table = run.trials
    table = table[(table["trial_id"] < trials) & (table["status"] == "ok") & table["within_budget"]]
    level_columns = [c for c in table.columns if c.startswith("level:")]
    full = last_stage(run.trials)  # the run's last stage, not the last one reached by trial N
    table = table[table["fidelity"] == full["fidelity"].max()]
    if table.empty:
        return None
    candidates = mean_over_draws(table, level_columns + ["fidelity"])
    column, ascending = FITNESS[run.config.searcher]
    return candidates.sort_values([column, "trial_id"], ascending=[ascending, True]).iloc[0]


def generation_ends(run: autoprune.Run) -> list[int]:
    """Trial counts at which the run's generations ended: a generation's first trial is
    scored on the fewest held-out samples, right after the last stage's (the run's last
    generation, followed by none, is not counted)."""
    table = run.trials.sort_values("trial_id")
    samples, ids = table["eval_samples"].to_numpy(), table["trial_id"].to_numpy()
    return [int(ids[i]) + 1 for i in range(len(ids) - 1)
            if samples[i] == samples.max() and samples[i + 1] == samples.min()]


def patience_stop(run: autoprune.Run, patience: int) -> int | None:
    """Where darwin with ``patience`` would have stopped: it runs as this run did until
    its parent has won ``patience`` generations in a row. None: not within this run."""
    first_parent = run.trials[run.trials["trial_id"] == int(run.info["searcher"]["offspring"])].iloc[0]
    parent, kept = levels_of(first_parent, run.space.group_names), 0  # the first ask ends with the first parent
    for end in generation_ends(run):
        winner = levels_of(choice_after(run, end), run.space.group_names)
        kept = kept + 1 if np.array_equal(winner, parent) else 0
        parent = winner
        if kept >= patience:
            return end
    return None


def check_run(run: autoprune.Run) -> None:
    if run.config.searcher != "darwin":
        raise SystemExit(f"{run.path}: search_progress follows darwin runs, not {run.config.searcher}")
    if run.config.searcher_options.get("fresh_draws"):
        raise SystemExit(f"{run.path}: a fresh_draws run scores its parent again each generation; "
                         "its running best is not its choice")
    incumbent = run.info.get("incumbent")
    if incumbent is not None:  # the reconstruction must agree with what the searcher said
        last = choice_after(run, len(run.trials))
        chosen = run.trials[run.trials["trial_id"] == incumbent].iloc[0]
        if not np.array_equal(levels_of(last, run.space.group_names), levels_of(chosen, run.space.group_names)):
            raise SystemExit(f"{run.path}: the running best disagrees with the searcher's incumbent")


def summarise(rows: list[dict], stops: list[dict], args) -> str:
    every = pd.DataFrame(rows)
    table = every[every["at_trials"].isin(args.points)].copy()
    table["group"] = table["run"].map(group_of)
    means = table.groupby(["group", "at_trials"], sort=True).agg(
        runs=("run", "size"), acc_mean=("final_test_acc", "mean"), acc_std=("final_test_acc", "std"),
        acc_min=("final_test_acc", "min"), acc_max=("final_test_acc", "max"),
        proxy_fitness=("fitness", "mean"), search_steps=("search_steps", "mean")).reset_index()
    table["seed"] = table["run"].str.extract(r"-(s\d+)$")[0]
    table["cell"] = [f"{acc:.4f} (trial {trial})" for acc, trial in zip(table["final_test_acc"], table["trial_id"])]
    per_run = table.pivot(index=["group", "at_trials"], columns="seed", values="cell").reset_index()
    per_run.columns = [str(c) for c in per_run.columns]
    lines = [
        "# darwin's choice along a search, retrained",
        "",
        *command_and_machine("search_progress.py", list(dict.fromkeys(table["command"]))),
        f"After the first `at_trials` trials of each run, the candidate darwin would hand over (its parent: "
        f"the best last-stage candidate so far by its fitness) retrained {args.final_steps} steps (batch "
        f"{args.batch_size}, lr {args.lr}, cosine) with the run's seed, as `searcher_comparison.py` retrains "
        "the found model, then scored on the test split. `proxy_fitness` is darwin's own score of it (held-out "
        "loss after 200 retraining steps, lower is better); `search_steps` the retraining steps spent so far.",
        "",
        markdown(means),
        "",
        "Per run: final test accuracy of the choice, and the trial that found it (a choice keeps its "
        "trial id while no later candidate beats it):",
        "",
        markdown(per_run),
        "",
    ]
    if stops:
        found = {(r["run"], r["at_trials"]): r for r in rows}
        patience = pd.DataFrame([{
            "run": Path(stop["run"]).name, "patience": stop["patience"], "trials": stop["trials"],
            "stops_at": stop["stops_at"] if stop["stops_at"] is not None else "-",
            "same_choice_as_the_run": (found[(stop["run"], stop["stops_at"])]["levels"]
                                       == found[(stop["run"], stop["trials"])]["levels"]
                                       if stop["stops_at"] is not None else True),
            "final_test_acc": found[(stop["run"], stop["stops_at"] or stop["trials"])]["final_test_acc"],
        } for stop in stops])
        lines += [
            "What darwin's `patience` option would have done: the run is the same until its parent has won "
            "`patience` generations in a row, then it stops (`-`: not within the run) and hands over that "
            "parent, retrained as above.",
            "",
            markdown(patience),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories of darwin searches")
    parser.add_argument("--at", required=True, help="comma-separated trial counts, e.g. 34,124,244,484")
    parser.add_argument("--patience", default="3,5,8",
                        help="comma-separated patience values to replay on each run (also retrained) [3,5,8]")
    add_final_recipe_arguments(parser)
    parser.add_argument("--name", default="search_progress")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.points = sorted({int(n) for n in args.at.split(",")})
    patiences = [int(p) for p in args.patience.split(",")] if args.patience else []
    stops: list[dict] = []
    journal = RESULTS / f"{args.name}.jsonl"
    rows = read_journal(journal)
    done = {(r["run"], r["at_trials"]) for r in rows}
    tasks: dict = {}
    for run_dir in args.runs:
        run = autoprune.open_run(run_dir)
        check_run(run)
        key = (run.config.model, run.config.data)
        if key not in tasks:
            tasks[key] = prepare_task(model=run.config.model, data=run.config.data)
        retrained = {tuple(r["levels"]): r for r in rows if r["run"] == str(run_dir)}
        run_stops = [{"run": str(run_dir), "patience": p, "trials": len(run.trials), "stops_at": patience_stop(run, p)}
                     for p in patiences]
        stops += run_stops
        # the patience stops and the run's end are retrained too, for the patience table
        extra = {s["stops_at"] for s in run_stops if s["stops_at"] is not None} | {len(run.trials)}
        for at in sorted(set(args.points) | extra):
            if at > len(run.trials):
                raise SystemExit(f"{run_dir} has {len(run.trials)} trials, fewer than --at {at}")
            if (str(run_dir), at) in done:
                continue
            choice = choice_after(run, at)
            if choice is None:
                continue
            levels = tuple(int(v) for v in levels_of(choice, run.space.group_names))
            if levels in retrained:  # the same choice as at an earlier point: same seed, same number
                earlier = retrained[levels]
                test_acc, val_acc, seconds = earlier["final_test_acc"], earlier["final_val_acc"], 0.0
            else:
                test_acc, val_acc, seconds = final_accuracy(tasks[key], run, np.array(levels), args,
                                                            run.config.seed)
            spent = run.trials[run.trials["trial_id"] < at]["steps"].fillna(0).sum()
            row = {"run": str(run_dir), "at_trials": at, "trial_id": int(choice["trial_id"]), "levels": list(levels),
                   "fitness": float(choice[FITNESS[run.config.searcher][0]]), "search_steps": int(spent),
                   "final_test_acc": float(test_acc), "final_val_acc": float(val_acc), "final_seconds": seconds,
                   "command": command_line("search_progress.py")}
            with open(journal, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
            retrained[levels] = row
            print(f"{Path(run_dir).name} after {at} trials: trial {row['trial_id']}, final test {test_acc:.4f}",
                  flush=True)
    text = summarise(rows, stops, args)
    (RESULTS / f"{args.name}.md").write_text(text)
    pd.DataFrame(rows).to_csv(RESULTS / f"{args.name}.csv", index=False)
    print(text)


if __name__ == "__main__":
    main()
