"""Whose front is best after the final recipe? ``random``, ``darwin``, ``emo``, ``emo-pms`` (issue 18).

Each searcher searches the same task and budget (the budget is the front's upper edge)
with the same number of evaluations, per seed:

- ``random``, ``darwin``, ``emo``: ``--evaluations`` trials (darwin's staged trials
  included);
- ``emo-pms``: its dense measurement, its sub-network measurements (which GPIR reuses:
  ``gpir_samples`` = ``calibration_samples``) and its whole networks together; its
  ``generations`` are set so that ``1 + sub_networks * pop_size * generations`` plus its
  whole networks is about ``--evaluations`` (the table gives what each run spent:
  evaluations, retraining steps, seconds; measurements do not retrain, so at equal
  evaluations emo-pms trains far less).

A run's front (held-out accuracy against FLOPs, the product's front without the noisy
latency) is a proxy: each trial retrained ``--fidelity`` steps. So up to ``--members``
members of it, evenly spread over its FLOPs (both ends included), are retrained with the
experiments' common final recipe (``searcher_comparison.py``'s ``final_accuracy``) and
scored on the test split; the final front is the non-dominated of those, and its
hypervolume (test error against FLOPs ratio) is taken up to the fixed reference point of
``autoprune front``, on the test split: the dense model's test error + 0.25, FLOPs 1.0. For ``darwin`` its own
choice (``--pick searcher``) is retrained too. ``--variant NAME=YAML`` adds a searcher
with options under its own name (``emo-pms_mimic={searcher: emo-pms, mimic_steps: 20}``:
does feature mimicking change emo-pms's front?). ``edge``: the best final test accuracy of a
run's retrained members, all within the budget, set against darwin's choice.

Every retrained member is journaled as it finishes (``results/<name>_members.jsonl``) and
every (searcher, seed) when its members are done (``results/<name>.jsonl``); run
directories live under ``experiments/runs/<name>/``. A killed study resumes where it
stopped: run the same command again.

    python experiments/front_comparison.py --name front_comparison_resnet20 --data fashion-mnist \\
        --model resnet20 --budget flops=0.3 --seeds 0,1,2 --evaluations 96 --members 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

import autoprune
from autoprune.evaluation.training import measure
from autoprune.store.front import hypervolume, levels_of, pareto_front
from autoprune.store.quality import ACCURACY
from autoprune.tasks import prepare_task
from emo_pms_vs_emo import progress
from proxy_fidelity import command_and_machine, command_line, markdown
from searcher_comparison import add_final_recipe_arguments, final_accuracy, read_journal

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"
SEARCHERS = ("random", "darwin", "emo", "emo-pms")
#: the study's two objectives: the proxy front and the final front alike
OBJECTIVES = (("accuracy", "max"), ("flops", "min"))
PMS_SUB_NETWORKS = 3
PMS_FRACTIONS = 6  # emo-pms's default budget_fractions: its whole networks


def searcher_options(searcher: str, args) -> dict:
    """Options that make ``searcher`` spend about ``args.evaluations`` evaluations."""
    if searcher == "emo":
        return {"pop_size": args.emo_pop}
    if searcher == "emo-pms":
        per_generation = PMS_SUB_NETWORKS * args.pms_pop
        generations = max(1, round((args.evaluations - PMS_FRACTIONS - 1) / per_generation))
        return {"pop_size": args.pms_pop, "generations": generations, "sub_networks": PMS_SUB_NETWORKS,
                "calibration_samples": args.calibration_samples, "gpir_samples": args.calibration_samples}
    return {}


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME=YAML mapping`` with a ``searcher`` key, from ``--variant``."""
    name, _, body = text.partition("=")
    options = yaml.safe_load(body) if body else None
    if not name or not isinstance(options, dict) or options.get("searcher") not in SEARCHERS:
        raise SystemExit(f"--variant wants NAME={{searcher: one of {list(SEARCHERS)}, option: value, ...}}, "
                         f"got {text!r}")
    return name.strip(), options


def search_run(args, label: str, seed: int) -> autoprune.Run:
    """The run of ``label`` (a searcher, or a ``--variant``: its searcher's study options
    with the variant's on top)."""
    variant = dict(args.variants.get(label, {"searcher": label}))
    searcher = variant.pop("searcher")
    path = RUNS / args.name / f"{label}-s{seed}"
    trials = args.evaluations if searcher != "emo-pms" else PMS_FRACTIONS
    if (path / "run.json").exists():
        return autoprune.resume(path, trials=trials, progress=False)
    options = {**searcher_options(searcher, args), **variant}
    return autoprune.search(run_dir=path, progress=False, data=args.data, model=args.model, budget=[args.budget],
                            searcher=searcher, searcher_options=options, trials=trials,
                            seed=seed, fidelity=args.fidelity, threads=args.threads, latency_repeats=0)


def spread(front: pd.DataFrame, members: int) -> pd.DataFrame:
    """Up to ``members`` rows of ``front`` evenly spread over its FLOPs, both ends included."""
    ordered = front.sort_values("flops").reset_index(drop=True)
    if len(ordered) <= members:
        return ordered
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ordered) - 1, members)})
    return ordered.iloc[picks].reset_index(drop=True)


def retrained(task, run: autoprune.Run, row: pd.Series, args, seed: int, searcher: str,
              done: dict[tuple[str, int, int], dict]) -> dict:
    """The final recipe's result of one member (journaled; reused when done before)."""
    key = (searcher, seed, int(row["trial_id"]))
    if key not in done:
        levels = levels_of(row, run.space.group_names)
        accuracy, held_out, seconds = final_accuracy(task, run, levels, args, seed)
        record = {"searcher": searcher, "seed": seed, "trial_id": int(row["trial_id"]),
                  "flops": float(row["flops"]), "flops_ratio": float(row["flops_ratio"]),
                  "proxy_accuracy": float(row["accuracy"]), "final_test_acc": float(accuracy),
                  "final_val_acc": float(held_out), "final_seconds": seconds}
        with open(RESULTS / f"{args.name}_members.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        done[key] = record
    return done[key]


def final_front(members: list[dict], dense_test_acc: float) -> tuple[list[dict], float]:
    """The non-dominated retrained members (test error against FLOPs ratio) and their
    hypervolume up to the dense model's test error + the front's margin and FLOPs 1.0."""
    points = np.array([[1.0 - m["final_test_acc"], m["flops_ratio"]] for m in members])
    front = NonDominatedSorting().do(points, only_non_dominated_front=True)
    reference = np.array([1.0 - dense_test_acc + ACCURACY.hv_margin, 1.0])
    return [members[i] for i in front], float(HV(ref_point=reference)(points[front]))


def study_row(args, task, dense_test_acc: float, searcher: str, seed: int,
              done: dict[tuple[str, int, int], dict]) -> dict:
    run = search_run(args, searcher, seed)
    table = run.trials
    proxy = pareto_front(table, OBJECTIVES)
    if proxy.empty:
        raise RuntimeError(f"{run.path}: no successful trial within the budget")
    chosen = spread(proxy, args.members)
    members = [retrained(task, run, row, args, seed, searcher, done) for _, row in chosen.iterrows()]
    choice = None
    if run.info.get("incumbent") is not None:  # darwin: the model it would hand the user
        choice = retrained(task, run, run.pick("searcher"), args, seed, searcher, done)
        members.append(choice)
    front, volume = final_front(members, dense_test_acc)
    kinds = table["kind"].value_counts()
    held_out = {key: run.info["dense"][key] for key in ("accuracy", "flops")}  # the proxy front's two objectives
    return {
        "searcher": searcher, "seed": seed, "evaluations": int(len(table)),
        "trials": int(kinds.get("trial", 0)), "measurements": int(kinds.get("measurement", 0)),
        "search_steps": int(table["steps"].fillna(0).sum()),
        "search_seconds": float(sum(s["seconds"] for s in run.info["sessions"])),
        "proxy_front": int(len(proxy)), "proxy_hypervolume": hypervolume(proxy, held_out),
        "retrained": len(members), "final_front": len(front), "hypervolume": volume,
        "edge_acc": max(m["final_test_acc"] for m in members),
        "choice_acc": None if choice is None else choice["final_test_acc"],
        "members": [m["trial_id"] for m in members], "command": command_line("front_comparison.py"),
    }


def cost_to_match(args, rows: list[dict]) -> pd.DataFrame:
    """Per seed with an ``emo-pms`` run: its proxy hypervolume (held-out accuracy against
    FLOPs), evaluations and summed evaluation seconds, and what each other searcher of the
    study spent until its own proxy front first reached that hypervolume (the issue's
    question: is dividing cheaper?). Read from the run directories' journals."""
    table = []
    for seed in sorted({r["seed"] for r in rows if r["searcher"] == "emo-pms"}):
        pms = progress(RUNS / args.name / f"emo-pms-s{seed}", OBJECTIVES)
        target = float(pms["hypervolume"].iloc[-1])
        row = {"seed": seed, "emo-pms proxy_hv": target, "emo-pms evaluations": int(pms["evaluations"].iloc[-1]),
               "emo-pms seconds": float(pms["seconds"].iloc[-1])}
        for other in sorted({r["searcher"] for r in rows if r["seed"] == seed} - {"emo-pms"}):
            trace = progress(RUNS / args.name / f"{other}-s{seed}", OBJECTIVES)
            reached = trace[trace["hypervolume"] >= target - 1e-12]
            row[f"{other} to it"] = ("never" if reached.empty else
                                     f"{int(reached['evaluations'].iloc[0])} ({reached['seconds'].iloc[0]:.0f} s)")
        table.append(row)
    return pd.DataFrame(table)


def summarise(rows: list[dict], args, dense_test_acc: float) -> str:
    table = pd.DataFrame(rows)
    summary = (table.groupby("searcher", sort=False)
               .agg(seeds=("seed", "count"), hv_mean=("hypervolume", "mean"), hv_std=("hypervolume", "std"),
                    edge_mean=("edge_acc", "mean"), edge_std=("edge_acc", "std"),
                    evaluations=("evaluations", "mean"), measurements=("measurements", "mean"),
                    search_steps=("search_steps", "mean"), search_seconds=("search_seconds", "mean"),
                    proxy_hv=("proxy_hypervolume", "mean"), final_front=("final_front", "mean"))
               .reset_index())
    if "random" in set(summary["searcher"]):
        base = float(summary.loc[summary["searcher"] == "random", "hv_mean"].iloc[0])
        summary.insert(4, "hv_vs_random_pct", 100 * (summary["hv_mean"] / base - 1) if base > 0 else np.nan)
    choices = table.dropna(subset=["choice_acc"]) if "choice_acc" in table else table.iloc[:0]
    darwin_line = (f"darwin's own choice, retrained: {choices['choice_acc'].mean():.4f} mean test accuracy over "
                   f"{len(choices)} seeds." if not choices.empty else "")
    lines = [
        f"# Fronts compared after the final recipe ({args.data} / {args.model}, {args.budget})", "",
        *command_and_machine("front_comparison.py", list(dict.fromkeys(r["command"] for r in rows))), "",
        f"About {args.evaluations} evaluations per search (trials retrained {args.fidelity} steps; emo-pms's "
        f"measurements on {args.calibration_samples} held-out samples without retraining); up to {args.members} "
        f"members of each run's front (held-out accuracy against FLOPs), spread over its FLOPs, retrained "
        f"{args.final_steps} steps (batch {args.batch_size}, lr {args.lr}, cosine) and scored on the test split. "
        f"`hv`: hypervolume of the retrained members' front (test error, FLOPs ratio) up to the dense model's "
        f"test error ({1 - dense_test_acc:.4f}) + {ACCURACY.hv_margin} and FLOPs 1.0; `edge`: the best retrained "
        "member's test accuracy (all within the budget); `proxy_hv`: the search's own front, on held-out accuracy. Spread "
        "(`_std`) over seeds.", "",
        markdown(summary), "", darwin_line, "",
    ]
    cost = cost_to_match(args, rows)
    if not cost.empty:
        lines += ["## The cost of emo-pms's proxy hypervolume", "",
                  "Per seed: emo-pms's proxy hypervolume (its front on held-out accuracy against FLOPs, after all "
                  "its evaluations), its evaluations and summed evaluation seconds; then, per other searcher, the "
                  "evaluations (and summed evaluation seconds) after which its own proxy front first reached that "
                  "hypervolume (`never`: not within its evaluations). Evaluation seconds leave out each run's "
                  "fixed setup.", "", markdown(cost), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--budget", default="flops=0.3")
    parser.add_argument("--searchers", type=lambda s: s.split(","), default=list(SEARCHERS))
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=96)
    parser.add_argument("--fidelity", type=int, default=100, help="retraining steps of every trial")
    parser.add_argument("--members", type=int, default=4, help="front members retrained per run")
    parser.add_argument("--emo-pop", type=int, default=16)
    parser.add_argument("--pms-pop", type=int, default=16)
    parser.add_argument("--calibration-samples", type=int, default=512)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=YAML",
                        help="a searcher with options under its own name (add NAME to --searchers), e.g. "
                             "'emo-pms_mimic={searcher: emo-pms, mimic_steps: 20}'")
    parser.add_argument("--name", default="front_comparison")
    parser.add_argument("--summary-only", action="store_true",
                        help="rewrite the tables from the journal and the run directories, searching nothing")
    add_final_recipe_arguments(parser)
    args = parser.parse_args()
    args.variants = dict(parse_variant(v) for v in args.variant)
    unknown = sorted(set(args.searchers) - set(SEARCHERS) - set(args.variants))
    if unknown:
        raise SystemExit(f"unknown searchers {unknown}: use {list(SEARCHERS)} or a --variant name")
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    journal = RESULTS / f"{args.name}.jsonl"
    rows = read_journal(journal)
    finished = {(r["searcher"], r["seed"]) for r in rows}
    done = {(m["searcher"], m["seed"], m["trial_id"]): m for m in read_journal(RESULTS / f"{args.name}_members.jsonl")}
    task = prepare_task(model=args.model, data=args.data)
    dense_test_acc = float(measure(task.dense, task.data, task.data.test)[0])
    for seed in [] if args.summary_only else args.seeds:
        for searcher in args.searchers:
            if (searcher, seed) in finished:
                continue
            row = study_row(args, task, dense_test_acc, searcher, seed, done)
            with open(journal, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"{searcher} seed {seed}: hypervolume {row['hypervolume']:.4f}, edge {row['edge_acc']:.4f} "
                  f"({row['evaluations']} evaluations, {row['search_seconds']:.0f} s)", flush=True)
            (RESULTS / f"{args.name}.md").write_text(summarise(rows, args, dense_test_acc))
    rows = read_journal(journal)  # another process may have added seeds meanwhile
    if rows:
        pd.DataFrame(rows).drop(columns=["members"]).to_csv(RESULTS / f"{args.name}.csv", index=False)
        text = summarise(rows, args, dense_test_acc)
        (RESULTS / f"{args.name}.md").write_text(text)
        print(text)

if __name__ == "__main__":
    main()
