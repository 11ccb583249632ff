"""An interrupted Tune run of autoprune, restored with ``tune.Tuner.restore`` on a real
local Ray: the run is stopped as Ctrl-C stops it (Tune's SIGUSR1 handler: the experiment
state is checkpointed, unfinished trials are left unfinished), restored with the
searcher's saved state, and finishes every trial once, proposing what an uninterrupted
search proposes; the import gives a front."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoprune.integrations.pruning import Pruning, prepare_pruning
from autoprune.searchers import make_searcher

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # two Tune runs: about a minute on 2 cores

FIDELITY = 4
TRIALS = 8


def _interrupt_once(marker: Path, after: int, on: str) -> Any:
    """A Tune callback that interrupts the run once, when the ``after``-th trial completed
    (``on="complete"``) or when the ``after``-th final result arrived (``on="final_result"``:
    that trial has reported everything but Tune has not yet told the searcher it completed,
    the window a Ctrl-C can fall into). The marker file keeps the restored run (which
    unpickles the callback again) going."""
    from ray import tune

    class Interrupt(tune.Callback):
        def __init__(self) -> None:
            self.seen = 0

        def _count(self) -> None:
            self.seen += 1
            if self.seen == after and not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGUSR1)  # what Tune does on Ctrl-C: checkpoint and stop

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if on == "complete":
                self._count()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if on == "final_result" and result.get("autoprune_final"):
                self._count()

    return Interrupt()


@pytest.mark.parametrize("interrupt_on", ["complete", "final_result"])
def test_an_interrupted_tune_run_is_restored_and_finishes_every_trial_once(
        ray_instance, tmp_path: Path, interrupt_on: str) -> None:  # noqa: ANN001
    from ray import tune

    from autoprune.api import open_run
    from autoprune.integrations.tune import AutopruneSearch, import_results, make_trainable

    pruning: Pruning = prepare_pruning(data="digits", budget=["flops=0.3"], fidelity=FIDELITY, bn_batches=1,
                                       latency_repeats=0, seed=2)
    search = AutopruneSearch.create("random", pruning=pruning)
    storage = tmp_path / "tune"
    tuner = tune.Tuner(
        make_trainable(pruning),
        tune_config=tune.TuneConfig(search_alg=search, num_samples=TRIALS, metric="accuracy", mode="max",
                                    max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), name="digits", verbose=0,
                                  callbacks=[_interrupt_once(tmp_path / "interrupted", after=3, on=interrupt_on)]),
    )
    first = tuner.fit()
    finished = [r for r in first if r.metrics and r.metrics.get("autoprune_final")]
    assert 3 <= len(finished) < TRIALS, "the run was interrupted with trials left"

    path = storage / "digits"
    assert tune.Tuner.can_restore(str(path))
    (saved,) = path.glob("searcher-state-*.pkl")  # Tune's name for it; autoprune writes JSON there, no pickle
    state = json.loads(saved.read_text())
    # A trial can report its final result and be cut off before Tune tells the searcher it
    # completed (Tune stops a trial a step after its last result); the restored run runs such
    # a trial again under its old id. So the searcher holds results only of finished trials,
    # at least the 3 completions a "complete" interrupt counted, and may hold fewer than
    # Tune shows finished.
    told = {int(t) for t in state["results"]}
    assert state["searcher"] == "random" and state["by_tune_id"]
    assert told <= {int(r.config["autoprune_trial"]) for r in finished}
    if interrupt_on == "complete":
        assert len(told) >= 3
    else:  # Tune handles one event a step, so the trial whose final result interrupted is untold
        assert len(told) < len(finished)
    restored = tune.Tuner.restore(str(path), trainable=make_trainable(pruning))
    results = restored.fit()
    assert len(results) == TRIALS and results.num_errors == 0
    ids = sorted(int(r.config["autoprune_trial"]) for r in results)
    assert ids == list(range(TRIALS)), "every trial once, none suggested twice"
    assert all(r.metrics["autoprune_final"] and int(r.metrics["steps"]) == FIDELITY for r in results)
    # what an uninterrupted search proposes with the same seed, trial by trial
    plain = make_searcher("random", problem=pruning.problem, seed=2)
    expected = [p.levels.tolist() for p in plain.ask(TRIALS)]
    by_id = {int(r.config["autoprune_trial"]): list(r.config["levels"]) for r in results}
    assert [by_id[i] for i in range(TRIALS)] == expected

    run = import_results(results, pruning=pruning, run_dir=tmp_path / "imported", search=search)
    run = open_run(tmp_path / "imported")
    assert len(run.trials) == TRIALS and not run.front.empty
    limit = pruning.problem.constraints.limits["flops"]
    assert all(pruning.space.cost("flops", np.array(levels)) <= limit for levels in by_id.values())
