"""Does a long search slow down as it grows? Trials per second at the start and the end of
a synthetic run, with the front rewritten after every trial as a search does (issue 20).

The run is the real loop (:func:`autoprune.loop.run_loop`: random searcher, journal
appended and fsynced per trial) on a synthetic space (a chain of 12 convolutions, FLOPs
budget 0.5) with an evaluator that scores a candidate instantly from a known objective
(:class:`autoprune.testing.synthetic.SeparableQuality` plus noise, FLOPs and params from
the cost model), so what is timed is the bookkeeping around the evaluations: the
searcher, the journal, and the front refresh. Two refreshes are compared:

- ``keeper``: :class:`autoprune.store.front_keeper.FrontKeeper`, what a search now uses;
- ``reread``: the previous refresh, the whole journal re-read into the trial table and the
  front computed from it after each trial (``Run.write_front``), for fewer trials (it is
  quadratic: the full 10,000 would take hours).

    python experiments/front_refresh.py                       # about 10 minutes on 2 busy cores
    python experiments/front_refresh.py --trials 2000 --reread-trials 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.executors.base import Executor, Job
from autoprune.loop import run_loop
from autoprune.searchers import make_searcher
from autoprune.searchers.base import Result
from autoprune.space.levels import LevelGrid
from autoprune.store.front import objectives_for, pareto_front, trials_table
from autoprune.store.front_keeper import FrontKeeper
from autoprune.store.journal import Journal
from autoprune.store.quality import ACCURACY
from autoprune.store.run_dir import write_front
from autoprune.testing.synthetic import SeparableQuality, chain_space, make_problem

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 500  # trials per rate measurement


class InstantExecutor(Executor):
    """Scores each job at once from a known objective: no training, no model."""

    def __init__(self, quality: SeparableQuality, seed: int) -> None:
        self.quality = quality
        self.space = quality.space
        self.rng = np.random.default_rng(seed)

    def run(self, jobs: list[Job]) -> Iterator[Result]:
        for job in jobs:
            levels = np.asarray(job.levels, dtype=np.int64)
            flops = int(self.space.cost("flops", levels[None])[0])
            params = int(self.space.cost("params", levels[None])[0])
            accuracy = float(self.quality.accuracy(levels[None])[0] + self.rng.normal(0, 0.01))
            yield Result(trial_id=job.trial_id, levels=levels, fidelity=job.fidelity, status="ok",
                         metrics={"accuracy": accuracy, "loss": 1 - accuracy, "flops": flops, "params": params,
                                  "flops_ratio": flops / self.space.dense["flops"],
                                  "params_ratio": params / self.space.dense["params"], "steps": job.fidelity},
                         eval_samples=job.eval_samples, parent=job.parent, draw=job.draw)


def run(trials: int, refresh: str, folder: Path, seed: int = 0) -> dict[str, Any]:
    """One synthetic run; the finishing time of every trial."""
    space = chain_space([64] * 12, LevelGrid(keep_ratios=tuple(1 - i / 16 for i in range(16))))
    problem = make_problem(space, 0.5)
    quality = SeparableQuality(space, weights=np.linspace(1.0, 3.0, space.n_groups))
    searcher = make_searcher("random", problem=problem, seed=seed)
    journal = Journal(folder, writable=True)
    objectives = objectives_for(ACCURACY)
    limits = {k: float(v) for k, v in problem.constraints.limits.items()}
    finished: list[float] = []
    if refresh == "keeper":
        keeper = FrontKeeper(path=folder, group_names=space.group_names, limits=limits, latency_model=None,
                             objectives=objectives)

        def on_result(result: Result) -> None:
            keeper.add(journal.records[result.trial_id])
            finished.append(time.perf_counter())
    else:
        def on_result(result: Result) -> None:
            records = list(Journal(folder).records.values())  # as Run.front read it: the whole file
            write_front(folder, pareto_front(trials_table(records, space.group_names, limits), objectives))
            finished.append(time.perf_counter())

    started = time.perf_counter()
    run_loop(searcher=searcher, executor=InstantExecutor(quality, seed), journal=journal, trials=trials,
             default_fidelity=10, seed=seed, on_result=on_result, progress=False)
    times = np.array(finished)
    window = min(WINDOW, trials // 4)
    start_rate = (window - 1) / (times[window - 1] - times[0])
    end_rate = (window - 1) / (times[-1] - times[-window])
    front = pareto_front(trials_table(list(journal.records.values()), space.group_names, limits), objectives)
    return {"refresh": refresh, "trials": trials, "window": window, "start": start_rate, "end": end_rate,
            "end/start": end_rate / start_rate, "seconds": time.perf_counter() - started, "front": len(front)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--reread-trials", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "front_refresh.md")
    args = parser.parse_args()
    rows = []
    for refresh, trials in (("keeper", args.trials), ("reread", args.reread_trials)):
        with tempfile.TemporaryDirectory() as folder:
            row = run(trials, refresh, Path(folder))
        print(row, flush=True)
        rows.append(row)
    lines = [
        "# Front refresh: trials per second at the start and end of a synthetic run",
        "",
        f"Command: `python experiments/front_refresh.py --trials {args.trials} --reread-trials {args.reread_trials}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
        f"{platform.python_version()}, {platform.platform()}.",
        "",
        "The real loop (random searcher, journal fsynced per trial) with an instant synthetic evaluator, so",
        "only the bookkeeping is timed; rates over the first and the last window of trials. `keeper` (what a",
        "search uses now) rewrites front.csv when the front changes; late in a run a new trial rarely",
        "changes it (a front member dominates it: a numpy check), so the end is faster than the start.",
        "`reread` (the refresh before) re-read the journal and rewrote front.csv after every trial: it slows",
        "down as the run grows. The machine is shared with other programs, so rates vary by tens of percent.",
        "",
        "| refresh | trials | window | trials/s at start | trials/s at end | end / start | front size at end | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row['refresh']} | {row['trials']} | {row['window']} | {row['start']:.0f} | {row['end']:.0f} "
                     f"| {row['end/start']:.2f} | {row['front']} | {row['seconds']:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
