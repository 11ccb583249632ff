"""Two small real runs on digits (random with over-budget and failed trials, darwin with stages)
shared by the view tests; each takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.store.journal import Journal
from autoprune.store.lock import RunLock

FAST = ["--fidelity", "10", "--bn-batches", "1", "--latency-repeats", "3"]


@pytest.fixture(scope="session")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random search, plus two failed trials and one over the budget journaled by the
    store's own writer (searchers propose only candidates within budget; the front, the
    plots and the report must still show such trials for what they are)."""
    path = tmp_path_factory.mktemp("views") / "random"
    assert main(["-q", "search", "--budget", "flops=0.4", "--trials", "8", *FAST, "--run-dir", str(path)]) == 0
    with RunLock.acquire(path):
        journal = Journal(path, writable=True)
        for trial_id, levels in ((8, 3), (9, 12)):
            record = dict(journal.records[0])
            record.update(trial_id=trial_id, levels=[levels] * len(record["levels"]), status="failed", metrics=None,
                          error="the loss diverged (NaN) while retraining")
            journal.append(record)
        over = dict(journal.records[0])
        dense = over["metrics"]["flops"] / over["metrics"]["flops_ratio"]
        over.update(trial_id=10, levels=[1] * len(over["levels"]),
                    metrics={**over["metrics"], "flops": int(0.8 * dense), "flops_ratio": 0.8})
        journal.append(over)
    return path


@pytest.fixture(scope="session")
def darwin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("views") / "darwin"
    assert main(["-q", "search", "--budget", "flops=0.3", "--seed", "1", "--searcher", "darwin",
                 "--searcher-option", "offspring=4", "--searcher-option", "survivors=[2, 1]",
                 "--searcher-option", "stage_steps=[3, 8]", "--searcher-option", "stage_samples=[64, 128]",
                 "--trials", "22", *FAST, "--run-dir", str(path)]) == 0
    return path
