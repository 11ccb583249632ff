"""How much torch's thread count matters when other work shares the cores (``--threads``).

The default search (digits, ``flops=0.4``, random searcher, 100 retraining steps per
trial) is run with each thread count of ``--threads-list`` (default: 1 and every core),
alone and beside ``--neighbours`` programs that each keep one core busy (a pure-Python
spin loop, the kind of single-threaded job a shared machine has). Reported: seconds per
trial (median of the trials' own timings) and the wall time of the search, and the
slowdown against the same thread count alone. Also what autoprune's busy-machine check
(:func:`autoprune.threads.others_running`) read in each condition, so the warning's
trigger is seen to fire where it should.

    python experiments/threads.py                      # 12 trials per condition
    python experiments/threads.py --trials 20 --neighbours 1,2

Writes ``threads.md`` and ``threads.csv`` under ``--out``. Run it on an otherwise idle
machine: "alone" means nothing else runs.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import autoprune
from autoprune.threads import local_cpus, others_running
from proxy_fidelity import command_and_machine, markdown

RESULTS = Path(__file__).parent / "results"

SPIN = "while True:\n    pass\n"


def busy_neighbours(count: int) -> list[subprocess.Popen]:
    """``count`` processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]


def measure(threads: int, neighbours: int, trials: int, seed: int) -> dict:
    spinners = busy_neighbours(neighbours)
    try:
        time.sleep(1.0)  # let the spinners reach their cores before anything is read
        seen = others_running()
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run = autoprune.search(run_dir=Path(tmp) / "run", progress=False, trials=trials, threads=threads,
                                   seed=seed)
            wall = time.perf_counter() - started
            per_trial = float(run.trials["seconds"].median())
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"neighbours": neighbours, "threads": threads, "others_running_seen": seen,
            "seconds_per_trial": per_trial, "search_wall_seconds": wall, "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--threads-list", default=None, help="comma-separated thread counts [1,CPUS]")
    parser.add_argument("--neighbours", default="1", help="comma-separated counts of busy neighbours besides 0 [1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cpus = local_cpus()
    thread_counts = [int(t) for t in args.threads_list.split(",")] if args.threads_list else sorted({1, cpus})
    neighbour_counts = [0] + [int(n) for n in args.neighbours.split(",")]

    rows = []
    for neighbours in neighbour_counts:
        for threads in thread_counts:
            row = measure(threads, neighbours, args.trials, args.seed)
            print(f"neighbours {neighbours}, threads {threads}: {row['seconds_per_trial']:.2f} s/trial, "
                  f"search {row['search_wall_seconds']:.1f} s (others running seen: {row['others_running_seen']})",
                  flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    alone = table[table["neighbours"] == 0].set_index("threads")["seconds_per_trial"]
    table["slowdown_vs_alone"] = table["seconds_per_trial"] / table["threads"].map(alone)
    fastest_alone = float(alone.min())
    table["vs_fastest_alone"] = table["seconds_per_trial"] / fastest_alone

    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "threads.csv", index=False)
    lines = ["# Torch threads on a shared machine", "", *command_and_machine("threads.py"), "",
             f"The default search (digits, flops=0.4, random searcher, 100 retraining steps per trial), "
             f"{args.trials} trials per row, on {cpus} cores, beside `neighbours` single-threaded busy "
             "programs. `seconds_per_trial` is the median of the trials' own timings; `slowdown_vs_alone` "
             "compares with the same thread count without neighbours, `vs_fastest_alone` with the fastest "
             "row without them; `others_running_seen` is what autoprune's busy-machine check read "
             "(it warns when this and torch's threads together exceed the cores).", "",
             markdown(table), ""]
    (args.out / "threads.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
