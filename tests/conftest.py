"""Shared fixtures: a private cache of trained dense models for the whole test session.

Tests run torch on one thread (and so do the processes they start), unless
``AUTOPRUNE_TEST_THREADS`` says otherwise: with as many intra-op threads as cores, one
busy neighbour on a shared CI machine made the suite 6-15x slower (threads wait on each
other), while one thread degrades gracefully.
"""

from __future__ import annotations

import os
from pathlib import Path

THREADS = os.environ.get("AUTOPRUNE_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = THREADS  # before torch is imported, for this process and its children

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(THREADS))

from autoprune.torchvision_compat import make_torchvision_importable  # noqa: E402

make_torchvision_importable()  # the test extra's torchvision is a CUDA build beside CPU torch


@pytest.fixture(scope="session", autouse=True)
def dense_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the digits model once per session into a temporary cache, never the user's."""
    path = tmp_path_factory.mktemp("autoprune-cache")
    previous = os.environ.get("AUTOPRUNE_CACHE")
    os.environ["AUTOPRUNE_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("AUTOPRUNE_CACHE", None)
    else:
        os.environ["AUTOPRUNE_CACHE"] = previous


@pytest.fixture(scope="session")
def ray_instance(dense_cache: Path):  # noqa: ANN201 (the ray module)
    """Ray started once for the session with 2 CPUs on loopback; executors in this process borrow it."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # someone else's: use it, leave it
        yield ray
        return
    # log_to_driver=False: the raylet's own warnings (a disk over 95% full, say) would otherwise be
    # forwarded to this process's stderr at random moments, into the one-sentence errors other
    # tests read from the CLI.
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING", log_to_driver=False, runtime_env={"env_vars": {"AUTOPRUNE_CACHE": str(dense_cache)}})
    yield ray
    ray.shutdown()


# Two small real runs on digits (random with over-budget and failed trials, darwin with
# stages), shared by the view and ONNX-export tests; each takes seconds.

VIEW_RUN_FLAGS = ["--fidelity", "10", "--bn-batches", "1", "--latency-repeats", "3"]


@pytest.fixture(scope="session")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random search, plus two failed trials and one over the budget journaled by the
    store's own writer (searchers propose only candidates within budget; the front, the
    plots and the report must still show such trials for what they are)."""
    from autoprune.cli import main
    from autoprune.store.journal import Journal
    from autoprune.store.lock import RunLock

    path = tmp_path_factory.mktemp("views") / "random"
    assert main(["-q", "search", "--budget", "flops=0.4", "--trials", "8", *VIEW_RUN_FLAGS,
                 "--run-dir", str(path)]) == 0
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
    from autoprune.cli import main

    path = tmp_path_factory.mktemp("views") / "darwin"
    assert main(["-q", "search", "--budget", "flops=0.3", "--seed", "1", "--searcher", "darwin",
                 "--searcher-option", "offspring=4", "--searcher-option", "survivors=[2, 1]",
                 "--searcher-option", "stage_steps=[3, 8]", "--searcher-option", "stage_samples=[64, 128]",
                 "--trials", "22", *VIEW_RUN_FLAGS, "--run-dir", str(path)]) == 0
    return path
