"""Among a finished search's finalists, does its proxy pick the one that retrains best? (issue 5)

A staged searcher (darwin) ranks its last stage by a short proxy: 200 retraining steps,
scored on held-out data. The proxy studies say that proxy is biased against long
retraining. This study asks what that bias costs at the end of a real search, and what a
remedy would buy: every one of a run's ``--top`` best distinct last-stage candidates (by
the searcher's own fitness, averaged over draws), and the searcher's own choice and the
front's ``--pick best`` where they are not among them, is retrained with the common final
recipe of ``searcher_comparison.py`` (same seed, so the searcher's own choice reproduces
its number there) and scored on the test split and on the held-out slice.

Per run we report how the proxy ranks the finalists against their final accuracy
(Kendall tau), how far apart they end up, and the test accuracy of each way of choosing:

- ``searcher``: the searcher's own choice (``--pick searcher``);
- ``front_best``: the front's highest held-out accuracy (``--pick best``);
- ``val_top{k}``: among the proxy's ``k`` best, the one with the best held-out accuracy
  *after the final recipe* (selection by the final recipe itself: ``k`` final retrainings
  instead of one, and no test data seen);
- ``oracle``: the best test accuracy among them (unreachable; the ceiling).

Rows are journaled as each retraining finishes; a killed study resumes.

    python experiments/finalist_retraining.py --runs experiments/runs/searcher_comparison_resnet20_long-flops0.05-darwin-s0 --top 6
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau

import autoprune
from autoprune.store.front import levels_of
from autoprune.store.front import last_stage, mean_over_draws
from autoprune.tasks import prepare_task
from proxy_fidelity import command_and_machine, command_line, markdown
from searcher_comparison import FITNESS, add_final_recipe_arguments, final_accuracy, read_journal

RESULTS = Path(__file__).parent / "results"


def finalists(run: autoprune.Run, top: int) -> pd.DataFrame:
    """The run's ``top`` best distinct last-stage candidates by its searcher's fitness (mean
    over draws), plus its own choice and the front's best, with a column saying which is which."""
    table = run.trials
    usable = table[(table["status"] == "ok") & table["within_budget"]]
    level_columns = [c for c in usable.columns if c.startswith("level:")]
    candidates = mean_over_draws(last_stage(usable), level_columns + ["fidelity"])
    column, ascending = FITNESS[run.config.searcher]
    candidates = candidates.sort_values(column, ascending=ascending).reset_index(drop=True)
    candidates["proxy_rank"] = np.arange(len(candidates))
    picks = {}
    for role, spec in (("searcher", "searcher"), ("front_best", "best")):
        try:
            picks[role] = levels_of(run.pick(spec), run.space.group_names)
        except autoprune.UserError:  # a searcher without a choice of its own
            continue
    is_pick = {role: (candidates[level_columns].to_numpy() == levels).all(axis=1) for role, levels in picks.items()}
    for role, match in is_pick.items():
        if not match.any():
            raise RuntimeError(f"{run.path}: the {role} pick is not a last-stage candidate")
        candidates[role] = match
    keep = candidates["proxy_rank"] < top
    for match in is_pick.values():
        keep |= match
    chosen = candidates[keep].copy()
    chosen["fitness"] = chosen[column]
    return chosen.reset_index(drop=True)


def group_of(run_dir: str) -> str:
    """The run's study and searcher without its seed: runs of one group are averaged."""
    return re.sub(r"-s\d+$", "", Path(run_dir).name)


def choices(rows: pd.DataFrame, ks: list[int]) -> dict:
    """Test accuracy of each way of choosing among one run's retrained finalists."""
    ranked = rows.sort_values("proxy_rank")
    out = {"finalists": len(rows),
           "tau_proxy_vs_final": kendalltau(-ranked["proxy_rank"], ranked["final_test_acc"])[0],
           "final_spread_points": 100 * (ranked["final_test_acc"].max() - ranked["final_test_acc"].min())}
    for role in ("searcher", "front_best"):
        if ranked[role].any():
            out[role] = float(ranked[ranked[role]]["final_test_acc"].iloc[0])
    for k in ks:
        head = ranked[ranked["proxy_rank"] < k]
        out[f"val_top{k}"] = float(head.loc[head["final_val_acc"].idxmax(), "final_test_acc"])
    out["oracle"] = float(ranked["final_test_acc"].max())
    return out


def summarise(rows: list[dict], args) -> str:
    table = pd.DataFrame(rows)
    ks = sorted({k for k in (1, 2, 4, args.top) if k <= args.top})
    per_run = pd.DataFrame([{"group": group_of(run), "run": Path(run).name, **choices(part, ks)}
                            for run, part in table.groupby("run", sort=False)])
    means = per_run.drop(columns="run").groupby("group", sort=False).mean().reset_index()
    means.insert(1, "runs", per_run.groupby("group", sort=False).size().to_numpy())
    lines = [
        "# Finalists of a search retrained with the final recipe",
        "",
        *command_and_machine("finalist_retraining.py", list(dict.fromkeys(table["command"]))),
        f"Each run's {args.top} best distinct last-stage candidates by its searcher's fitness (and its own choice "
        f"and the front's best) retrained {args.final_steps} steps (batch {args.batch_size}, lr {args.lr}, cosine) "
        "with the run's seed, as `searcher_comparison.py` retrains the found model. Accuracies are final test "
        "accuracy; `val_topK` picks, among the proxy's K best, the best held-out accuracy after the final recipe; "
        "`oracle` is the best test accuracy among them; `tau_proxy_vs_final` ranks the proxy's order against "
        "final test accuracy.",
        "",
        "Mean over runs:",
        "",
        markdown(means),
        "",
        "Per run:",
        "",
        markdown(per_run),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories of finished searches")
    parser.add_argument("--top", type=int, default=6)
    add_final_recipe_arguments(parser)
    parser.add_argument("--name", default="finalist_retraining")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    journal = RESULTS / f"{args.name}.jsonl"
    rows = read_journal(journal)
    done = {(r["run"], tuple(r["levels"])) for r in rows}
    tasks: dict = {}
    for run_dir in args.runs:
        run = autoprune.open_run(run_dir)
        key = (run.config.model, run.config.data)
        if key not in tasks:
            tasks[key] = prepare_task(model=run.config.model, data=run.config.data)
        for _, candidate in finalists(run, args.top).iterrows():
            levels = levels_of(candidate, run.space.group_names)
            if (str(run_dir), tuple(int(v) for v in levels)) in done:
                continue
            test_acc, val_acc, seconds = final_accuracy(tasks[key], run, levels, args, run.config.seed)
            row = {"run": str(run_dir), "levels": [int(v) for v in levels],
                   "proxy_rank": int(candidate["proxy_rank"]), "fitness": float(candidate["fitness"]),
                   "draws": int(candidate["draws"]), "proxy_accuracy": float(candidate["accuracy"]),
                   "searcher": bool(candidate.get("searcher", False)),
                   "front_best": bool(candidate.get("front_best", False)),
                   "final_test_acc": test_acc, "final_val_acc": val_acc, "final_seconds": seconds,
                   "command": command_line("finalist_retraining.py")}
            with open(journal, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"{Path(run_dir).name} rank {row['proxy_rank']}: final test {test_acc:.4f} val {val_acc:.4f}",
                  flush=True)
    text = summarise(rows, args)
    (RESULTS / f"{args.name}.md").write_text(text)
    pd.DataFrame(rows).to_csv(RESULTS / f"{args.name}.csv", index=False)
    print(text)


if __name__ == "__main__":
    main()
