"""Where do the found models prune? Kept share of every group, per searcher (issue 5).

Reads a ``searcher_comparison.py`` study (its journal and run directories) and reports,
for every budget and searcher, the share of each group's channels its found models keep
(mean over seeds, and the spread between seeds), next to uniform pruning at the same
FLOPs (``uniform_fine``). A searched allocation far from uniform that does not retrain
better says the search found a different model; one close to uniform says the space
near uniform is flat at this budget. No training: a few seconds.

    python experiments/allocations.py --name searcher_comparison_resnet20_long
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import autoprune
from proxy_fidelity import command_and_machine, markdown
from searcher_comparison import read_journal

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"


def kept_shares(run: autoprune.Run, levels: list[int]) -> np.ndarray:
    """The share of each group's channels that ``levels`` keep in ``run``'s space."""
    space = run.space
    kept = np.asarray(space.kept_counts(np.asarray(levels)), dtype=float)
    full = np.asarray(space.kept_counts(np.zeros(len(levels), dtype=np.int64)), dtype=float)
    return kept / full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the searcher_comparison study (its --name)")
    parser.add_argument("--out-name", default=None, help="results file stem [allocations_NAME]")
    args = parser.parse_args()
    rows = read_journal(RESULTS / f"{args.name}.jsonl")
    if not rows:
        raise SystemExit(f"no journal for study {args.name!r} under {RESULTS}")
    records, names = [], None
    for row in rows:
        run = autoprune.open_run(RUNS / f"{args.name}-{row['budget'].replace('=', '')}-{row['searcher']}-s{row['seed']}")
        names = [g.name for g in run.space.groups]
        records.append({"budget": row["budget"], "searcher": row["searcher"], "seed": row["seed"],
                        "final_test_acc": row["final_test_acc"], "shares": kept_shares(run, row["levels"])})
    table = pd.DataFrame(records)
    out = []
    for (budget, searcher), part in table.groupby(["budget", "searcher"], sort=False):
        shares = np.stack(part["shares"].to_numpy())
        uniform = table[(table["budget"] == budget) & (table["searcher"] == "uniform_fine")]
        reference = np.stack(uniform["shares"].to_numpy()).mean(axis=0) if len(uniform) else np.full(len(names), np.nan)
        out.append({"budget": budget, "searcher": searcher, "seeds": len(part),
                    "acc_mean": float(part["final_test_acc"].mean()),
                    "distance_to_uniform": float(np.abs(shares.mean(axis=0) - reference).mean()),
                    "seed_spread": float(shares.std(axis=0).mean()),
                    **{name: float(v) for name, v in zip(names, shares.mean(axis=0))}})
    order = {"uniform": 0, "uniform_fine": 1}
    summary = pd.DataFrame(out)
    summary = summary.sort_values(["budget", "searcher"], key=lambda c: c.map(lambda v: order.get(v, 2))
                                  if c.name == "searcher" else c, kind="stable").reset_index(drop=True)
    stem = args.out_name or f"allocations_{args.name}"
    summary.to_csv(RESULTS / f"{stem}.csv", index=False)
    lines = ["# Where the found models prune", "", *command_and_machine("allocations.py"), "",
             f"Study `{args.name}`: for each budget and searcher, the share of every group's channels kept by "
             "the models it found (mean over seeds). `distance_to_uniform` is the mean absolute difference, over "
             "groups, to uniform pruning at the same FLOPs (`uniform_fine`); `seed_spread` the mean over groups of "
             "the standard deviation between seeds. Groups are named by the first layer whose outputs they are "
             "(`shortcut` groups: a stage's residual stream).", "",
             markdown(summary), ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
