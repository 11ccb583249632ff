"""How well do cheap proxies rank pruned candidates by their accuracy after long retraining?

Issue 3's proxy-fidelity study. Random allocations at the same FLOPs (plus uniform) are
scored by each proxy: accuracy right after pruning, after BatchNorm recalibration only,
and after short retraining at several fidelities (with and without distillation), each
run the way the evaluator runs it. The reference is test accuracy after a long recipe
(>= 10x the default fidelity). We report Kendall's tau between every proxy and the
reference, and each proxy's cost relative to the long recipe (training samples seen, and
seconds).

``--proxy-draws N`` also retrains the short proxies named by ``--draw-proxies`` (every
one by default) on N - 1 further draws of training
randomness (the seeds autoprune derives for draws 1, 2, ...: ``autoprune.loop.draw_seed``)
and reports each proxy averaged over its N draws (``f200_kd_x3``), at N times the cost:
is averaging draws a better use of compute than retraining longer?

Results are journaled (JSONL) as each candidate finishes, so a killed study resumes
where it stopped (run the same command again). Asking for more fidelities than a
finished study has adds only those proxies to its candidates; the long reference is
kept.

    python experiments/proxy_fidelity.py --data fashion-mnist --model digitnet \
        --budget flops=0.05 --candidates 24 --long-steps 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau

from autoprune.evaluation.training import TeacherCache, TrainConfig, measure, recalibrate_batchnorm, score, train
from autoprune.loop import draw_seed
from autoprune.searchers import make_searcher
from autoprune.searchers.base import Problem
from autoprune.space.analysis import build_search_space
from autoprune.space.budget import parse_budgets, resolve
from autoprune.space.materialize import materialize
from autoprune.tasks import prepare_task

RESULTS = Path(__file__).parent / "results"


def candidates(space, constraints, n: int, seed: int) -> list[np.ndarray]:
    problem = Problem(space=space, constraints=constraints)
    found = make_searcher("uniform", problem=problem, seed=seed).ask(1)
    random = make_searcher("random", problem=problem, seed=seed)
    while len(found) < n:
        found.extend(random.ask(1))
    return [p.levels for p in found]


def variants(args) -> list[tuple[str, int, TrainConfig]]:
    """(name, retraining steps, recipe) of every short-retraining proxy the study asks for."""
    config = TrainConfig(lr=args.lr, batch_size=args.batch_size)
    kd_config = TrainConfig(lr=args.lr, batch_size=args.batch_size, distill_weight=0.5)
    return [(f"f{f}", f, config) for f in args.fidelities] + [(f"f{f}_kd", f, kd_config) for f in args.kd_fidelities]


def drawn_proxies(args) -> list[str]:
    """The retraining proxies scored on several draws."""
    names = [name for name, _, _ in variants(args)]
    return names if args.draw_proxies is None else [n for n in names if n in args.draw_proxies]


def drawn(name: str, draw: int) -> str:
    """The row key prefix of proxy ``name`` on ``draw`` (draw 0 keeps the plain name)."""
    return name if draw == 0 else f"{name}_d{draw}"


def retrained_proxies(task, space, levels, args, row: dict, teacher: TeacherCache) -> None:
    """Add to ``row`` each short-retraining proxy (on each draw) it does not have yet, run as
    the evaluator runs it (distilling from the dense model's cached logits)."""
    data, dense = task.data, task.dense
    never = list(task.space_config.never_prune)
    for name, steps, cfg in variants(args):
        for draw in range(args.proxy_draws if name in drawn_proxies(args) else 1):
            key, seed = drawn(name, draw), draw_seed(args.seed, draw)
            if f"{key}_acc" in row:
                continue
            start = time.perf_counter()
            model, _ = materialize(dense, space, levels, task.example_input(), never_prune=never)
            used = recalibrate_batchnorm(model, data, batches=args.bn_batches, batch_size=args.batch_size, seed=seed)
            outcome = train(model, data, steps=steps, config=cfg, seed=seed,
                            teacher=teacher if cfg.distill_weight > 0 else None)
            scores = score(model, data, data.val)
            row[f"{key}_acc"] = scores["accuracy"] if not outcome.diverged else float("nan")
            row[f"{key}_loss"] = scores["loss"] if not outcome.diverged else float("nan")
            row[f"{key}_seconds"] = time.perf_counter() - start
            row[f"{key}_samples"] = used + outcome.samples


def long_recipe(task, space, levels, args, *, seed: int) -> tuple[float, float, float, int]:
    """(test accuracy, held-out accuracy, seconds, samples) after the long retraining with ``seed``."""
    start = time.perf_counter()
    model, _ = materialize(task.dense, space, levels, task.example_input(),
                           never_prune=list(task.space_config.never_prune))
    used = recalibrate_batchnorm(model, task.data, batches=args.bn_batches, batch_size=args.batch_size, seed=seed)
    outcome = train(model, task.data, steps=args.long_steps,
                    config=TrainConfig(lr=args.lr, batch_size=args.batch_size), seed=seed)
    test_acc, _ = measure(model, task.data, task.data.test)
    val_acc, _ = measure(model, task.data, task.data.val)
    return test_acc, val_acc, time.perf_counter() - start, used + outcome.samples


def extra_references(task, space, levels, args, row: dict) -> None:
    """Add to ``row`` the long recipe with further seeds (``final_test_acc_s1``, ...): how
    stable the reference's own ranking is bounds what any proxy can reach."""
    for k in range(1, args.reference_seeds):
        if f"final_test_acc_s{k}" in row:
            continue
        test_acc, _, seconds, _ = long_recipe(task, space, levels, args, seed=args.seed + k)
        row[f"final_test_acc_s{k}"], row[f"final_seconds_s{k}"] = test_acc, seconds


def complete(row: dict, args) -> bool:
    return (all(f"{name}_acc" in row for name, _, _ in variants(args))
            and all(f"{drawn(name, d)}_acc" in row for name in drawn_proxies(args) for d in range(args.proxy_draws))
            and all(f"final_test_acc_s{k}" in row for k in range(1, args.reference_seeds)))


def evaluate_candidate(task, space, levels, args, teacher: TeacherCache) -> dict:
    data = task.data
    row: dict = {"levels": [int(v) for v in levels],
                 "flops_ratio": float(space.relative_cost("flops", levels))}

    start = time.perf_counter()
    model, _ = materialize(task.dense, space, levels, task.example_input(),
                           never_prune=list(task.space_config.never_prune))
    row["pruned_acc"] = score(model, data, data.val)["accuracy"]
    row["pruned_seconds"] = time.perf_counter() - start
    row["pruned_samples"] = 0

    start = time.perf_counter()
    used = recalibrate_batchnorm(model, data, batches=args.bn_batches, batch_size=args.batch_size, seed=args.seed)
    row["bn_acc"] = score(model, data, data.val)["accuracy"]
    row["bn_seconds"] = time.perf_counter() - start + row["pruned_seconds"]
    row["bn_samples"] = used

    retrained_proxies(task, space, levels, args, row, teacher)

    test_acc, val_acc, seconds, samples = long_recipe(task, space, levels, args, seed=args.seed)
    row.update(final_test_acc=test_acc, final_val_acc=val_acc, final_seconds=seconds, final_samples=samples)
    extra_references(task, space, levels, args, row)
    return row


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def command_line(script: str) -> str:
    """This process's command, quoted so that it can be pasted into a shell."""
    return f"python experiments/{script} {shlex.join(sys.argv[1:])}"


def command_and_machine(script: str, commands: list[str] | None = None) -> list[str]:
    """The header lines every results table carries: how to rerun it (``commands`` when
    several processes made it), and where it ran."""
    commands = commands or [command_line(script)]
    return [
        *(f"Command: `{command}`" for command in commands),
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU; date {date.today().isoformat()}. The machine is shared: "
        "timings are medians, and other work may have run beside them.",
    ]


def markdown(table: pd.DataFrame) -> str:
    """A pipe table of ``table`` with floats to 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def summarise(rows: list[dict], args, dense: dict) -> tuple[pd.DataFrame, str]:
    table = pd.DataFrame(rows)
    seeds = [c for c in ["final_test_acc"] + [f"final_test_acc_s{k}" for k in range(1, args.reference_seeds)]
             if c in table]
    mean_reference = table[seeds].mean(axis=1)
    retrained = [f"f{f}" for f in args.fidelities] + [f"f{f}_kd" for f in args.kd_fidelities]
    proxies = ["pruned", "bn"] + retrained
    if args.proxy_draws > 1:  # each retrained proxy averaged over its draws, at the summed cost
        n = args.proxy_draws
        for name in drawn_proxies(args):
            for what, combine in (("acc", "mean"), ("loss", "mean"), ("samples", "sum"), ("seconds", "sum")):
                columns = [f"{drawn(name, d)}_{what}" for d in range(n)]
                table[f"{name}_x{n}_{what}"] = getattr(table[columns], combine)(axis=1)
        proxies += [f"{name}_x{n}" for name in drawn_proxies(args)]
    summary = []
    for proxy in proxies:
        tau, p_value = kendalltau(table[f"{proxy}_acc"], table["final_test_acc"], nan_policy="omit")
        summary.append({
            "proxy": proxy,
            "kendall_tau": tau,
            "p_value": p_value,
            "cost_samples_vs_long": table[f"{proxy}_samples"].mean() / table["final_samples"].mean(),
            "cost_seconds_vs_long": table[f"{proxy}_seconds"].mean() / table["final_seconds"].mean(),
            "mean_proxy_acc": table[f"{proxy}_acc"].mean(),
        })
        if f"{proxy}_loss" in table:  # darwin's fitness: the held-out loss, lower is better
            summary[-1]["kendall_tau_loss"] = kendalltau(-table[f"{proxy}_loss"], table["final_test_acc"],
                                                         nan_policy="omit")[0]
        if len(seeds) > 1:
            summary[-1]["kendall_tau_mean_reference"] = kendalltau(table[f"{proxy}_acc"], mean_reference,
                                                                   nan_policy="omit")[0]
    s = pd.DataFrame(summary)
    lines = [
        "# Proxy fidelity: ranking candidates by cheap proxies",
        "",
        f"Command: `python experiments/proxy_fidelity.py {shlex.join(args.argv)}`",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; date {date.today().isoformat()}.",
        f"Task: {args.data} / {args.model}, budget {args.budget}; dense test accuracy {dense['test']:.4f}. "
        f"{len(table)} candidates (uniform + random allocations filled to the budget).",
        f"Reference: test accuracy after {args.long_steps} retraining steps (batch {args.batch_size}, lr {args.lr}); "
        f"final test accuracy ranges {table['final_test_acc'].min():.4f} to {table['final_test_acc'].max():.4f} "
        f"(uniform: {table['final_test_acc'].iloc[0]:.4f}).",
        *([] if len(seeds) < 2 else [
            f"The long recipe with {len(seeds)} seeds: the seeds rank the candidates alike at Kendall tau "
            f"{kendalltau(table[seeds[0]], table[seeds[1]])[0]:.3f} (seed {args.seed} against {args.seed + 1}), "
            "what a second run of the long recipe reaches against the first; `kendall_tau_mean_reference` "
            "ranks each proxy against the mean over seeds."]),
        *([] if not (constant := [p for p in proxies if table[f"{p}_acc"].nunique() < 2]) else [
            f"Constant over the candidates (no ranking, tau undefined): {', '.join(constant)}."]),
        "Proxies are scored on the held-out slice of the training data; cost is relative to the long recipe "
        "(training samples seen, and wall seconds on this shared machine; proxies added to a finished study "
        "ran later, perhaps on another machine, so compare their seconds with care).",
        *([] if args.proxy_draws < 2 else [
            f"`NAME_x{args.proxy_draws}` is proxy NAME averaged over {args.proxy_draws} draws of training "
            "randomness (the seeds autoprune derives for its draws), at that many times its cost.",
            *(draw_agreement(table, name, args.proxy_draws) for name in drawn_proxies(args))]),
        "",
        markdown(s),
        "",
    ]
    return table, "\n".join(lines)


def draw_agreement(table: pd.DataFrame, name: str, n: int) -> str:
    """How proxy ``name`` ranks on each of its ``n`` draws, and how its draws agree: a proxy
    whose draws agree with each other far better than with the reference is biased, not
    noisy, and averaging draws cannot help it much."""
    columns = [f"{drawn(name, d)}_acc" for d in range(n)]
    against = [kendalltau(table[c], table["final_test_acc"], nan_policy="omit")[0] for c in columns]
    between = [kendalltau(table[a], table[b], nan_policy="omit")[0]
               for i, a in enumerate(columns) for b in columns[i + 1:]]
    return (f"`{name}` on its {n} draws one by one: Kendall tau against the reference "
            f"{', '.join(f'{t:.3f}' for t in against)}; the draws against each other "
            f"{min(between):.3f} to {max(between):.3f}.")


def write_journal(path: Path, rows: list[dict]) -> None:
    """Every row so far, replaced atomically: a kill leaves the previous journal whole."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="digitnet")
    parser.add_argument("--budget", default="flops=0.05")
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--fidelities", type=lambda s: [int(v) for v in s.split(",")], default=[50, 100, 200])
    parser.add_argument("--kd-fidelities", type=lambda s: [int(v) for v in s.split(",") if v], default=[100])
    parser.add_argument("--long-steps", type=int, default=2000)
    parser.add_argument("--bn-batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-seeds", type=int, default=1,
                        help="long retrainings per candidate, seeds seed, seed+1, ...; with more than one, "
                             "the reference's own rank stability is reported and proxies are also ranked "
                             "against the mean")
    parser.add_argument("--proxy-draws", type=int, default=1,
                        help="retrain every short proxy on this many draws of training randomness and also "
                             "report it averaged over them")
    parser.add_argument("--draw-proxies", type=lambda s: [v for v in s.split(",") if v], default=None,
                        help="which proxies --proxy-draws applies to, e.g. f100_kd,f200_kd [all]")
    parser.add_argument("--name", default="proxy_fidelity")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    RESULTS.mkdir(parents=True, exist_ok=True)
    journal = RESULTS / f"{args.name}.jsonl"
    task = prepare_task(model=args.model, data=args.data)
    never = list(task.space_config.never_prune)
    space = build_search_space(task.dense, task.example_input(), grid=task.space_config.grid, never_prune=never)
    constraints = resolve(parse_budgets([args.budget]), space)
    dense = {"test": measure(task.dense, task.data, task.data.test)[0]}
    teacher = TeacherCache(task.dense, len(task.data.train), task.data.num_classes)
    rows = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    todo = candidates(space, constraints, args.candidates, args.seed)
    for i, levels in enumerate(todo):
        if i < len(rows):
            assert rows[i]["levels"] == [int(v) for v in levels], "the journal belongs to another study"
            if complete(rows[i], args):
                continue
            retrained_proxies(task, space, levels, args, rows[i], teacher)  # proxies added to a finished study
            extra_references(task, space, levels, args, rows[i])  # and reference seeds
            write_journal(journal, rows)
            print(f"candidate {i + 1}/{len(todo)}: new proxies or reference seeds added", flush=True)
            continue
        row = evaluate_candidate(task, space, levels, args, teacher)
        rows.append(row)
        write_journal(journal, rows)
        print(f"candidate {i + 1}/{len(todo)}: final test {row['final_test_acc']:.4f}, "
              f"f100 val {row.get('f100_acc', float('nan')):.4f}", flush=True)
    table, text = summarise(rows, args, dense)
    table.to_csv(RESULTS / f"{args.name}.csv", index=False)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
