"""EMO-PMS against ``emo`` on the whole network: the cost of reaching the same hypervolume (issue 18).

The paper's claim is that dividing the network is cheaper. For each seed, one ``emo-pms``
run and one ``emo`` run search the same model, data and budget; the front's hypervolume
(fixed reference point, ``store.front.reference_point``) is followed trial by trial.

- ``emo-pms``'s cost: all of its evaluations (sub-network measurements, GPIR's, and the
  whole networks it proposes) and their summed evaluation seconds, up to the end.
- ``emo``'s cost to the same hypervolume: its evaluations and summed seconds until its
  front first reaches ``emo-pms``'s final hypervolume (``never`` if it does not within
  ``--trials``), and its own final hypervolume.

Evaluation seconds (each trial's own ``seconds``) leave out the run's fixed setup, the
same for both. Every run trains at the same ``--fidelity``; ``emo-pms``'s measurements
do not retrain (fidelity 0) and score on ``calibration_samples`` held-out samples only.

    python experiments/emo_pms_vs_emo.py --model digitnet --data digits --budget flops=0.5 \\
        --seeds 0,1,2 --fidelity 20 --trials 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import torch

import autoprune
from autoprune.store.front import OBJECTIVES, hypervolume, pareto_front, trials_table
from proxy_fidelity import command_and_machine, markdown

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"


def progress(run_dir: Path, objectives: tuple[tuple[str, str], ...] = OBJECTIVES) -> pd.DataFrame:
    """Per evaluation in trial order: cumulative evaluations, evaluation seconds and the
    hypervolume so far of the front on ``objectives`` (the product's front by default)."""
    info = json.loads((run_dir / "run.json").read_text())
    dense = {key: value for key, value in info["dense"].items() if key in {name for name, _ in objectives}}
    records = sorted((json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()),
                     key=lambda r: r["trial_id"])
    names = [g["name"] for g in info["space"]["groups"]]
    rows = []
    seconds = 0.0
    for k, record in enumerate(records):
        seconds += float((record.get("metrics") or {}).get("seconds", 0.0))
        table = trials_table(records[: k + 1], names, info["limits"])
        rows.append({"evaluations": k + 1, "seconds": seconds,
                     "hypervolume": hypervolume(pareto_front(table, objectives), dense)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digitnet")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--budget", default="flops=0.5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fidelity", type=int, default=20)
    parser.add_argument("--trials", type=int, default=64, help="emo's trials")
    parser.add_argument("--emo-pop", type=int, default=8)
    parser.add_argument("--pms-pop", type=int, default=8)
    parser.add_argument("--pms-generations", type=int, default=4)
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="emo_pms_vs_emo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs = {}
        for searcher, options, trials in (
            ("emo-pms", {"pop_size": args.pms_pop, "generations": args.pms_generations,
                         "calibration_samples": args.calibration_samples}, 10),
            ("emo", {"pop_size": args.emo_pop}, args.trials),
        ):
            path = RUNS / args.name / f"{searcher}-s{seed}"
            shutil.rmtree(path, ignore_errors=True)
            autoprune.search(run_dir=path, progress=False, model=args.model, data=args.data, budget=[args.budget],
                             searcher=searcher, searcher_options=options, trials=trials, seed=seed,
                             fidelity=args.fidelity, threads=args.threads, latency_repeats=0)
            runs[searcher] = progress(path)
        pms, emo = runs["emo-pms"], runs["emo"]
        target = float(pms["hypervolume"].iloc[-1])
        reached = emo[emo["hypervolume"] >= target - 1e-12]
        first = reached.iloc[0] if not reached.empty else None
        rows.append({
            "seed": seed,
            "emo-pms hypervolume": target,
            "emo-pms evaluations": int(pms["evaluations"].iloc[-1]),
            "emo-pms seconds": float(pms["seconds"].iloc[-1]),
            "emo evaluations to it": "never" if first is None else str(int(first["evaluations"])),
            "emo seconds to it": "never" if first is None else f"{float(first['seconds']):.1f}",
            "emo final hypervolume": float(emo["hypervolume"].iloc[-1]),
            "emo evaluations": int(emo["evaluations"].iloc[-1]),
            "emo seconds": float(emo["seconds"].iloc[-1]),
        })
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / f"{args.name}.csv", index=False)
    lines = [f"# EMO-PMS against emo: the cost of the same hypervolume ({args.model}, {args.data}, {args.budget})", "",
             *command_and_machine("emo_pms_vs_emo.py"), "",
             f"Every trial retrained {args.fidelity} steps; emo-pms: {args.pms_pop} per population, "
             f"{args.pms_generations} generations per sub-network, measurements on {args.calibration_samples} "
             f"held-out samples without retraining; emo: populations of {args.emo_pop}, {args.trials} trials. "
             "Hypervolume of the front up to the fixed reference point (dense error + 0.25, FLOPs and params "
             "1.0); seconds: summed evaluation seconds.", "", markdown(table), ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
