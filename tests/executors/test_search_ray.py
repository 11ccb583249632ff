"""Searches on digits with ``--executor ray``: the same trials as local, and a worker killed
mid-evaluation costs nothing but time."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autoprune.cli import main
from autoprune.evaluation.checkpoints import CheckpointStore
from autoprune.executors.base import Job
from autoprune.loop import run_loop
from autoprune.searchers import make_searcher
from autoprune.store.journal import Journal

from ray_procs import journal

pytestmark = pytest.mark.ray

COMMON = ["--budget", "flops=0.3", "--trials", "8", "--fidelity", "30", "--bn-batches", "2", "--seed", "3"]


def test_ray_and_local_executors_evaluate_the_same_trials(ray_instance: Any, tmp_path: Path) -> None:
    ray_dir, local_dir = tmp_path / "ray", tmp_path / "local"
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # a driver with more threads than a worker: latency is still taken as trials are
    try:
        assert main(["-q", "search", *COMMON, "--executor", "ray", "--workers", "2", "--run-dir", str(ray_dir)]) == 0
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(1)  # as each Ray worker runs: then even the metrics agree to the bit
    try:
        assert main(["-q", "search", *COMMON, "--run-dir", str(local_dir)]) == 0
    finally:
        torch.set_num_threads(threads)
    ray_session = json.loads((ray_dir / "run.json").read_text())["sessions"][-1]
    local_session = json.loads((local_dir / "run.json").read_text())["sessions"][-1]
    assert ray_session["workers"]["workers"] == 2 and ray_session["workers"]["jobs"] == 8
    assert 0 < ray_session["workers"]["utilisation"] <= 1
    assert "workers" not in local_session  # one in-process worker: nothing to report
    ray_info = json.loads((ray_dir / "run.json").read_text())
    assert ray_info["dense_latency"]["threads"] == 1  # measured on a worker (1 CPU each), not the 3-thread driver
    assert ray_info["dense_latency"]["device"] == ray_info["evaluator"]["placement"]["device"]
    by_ray = {r["trial_id"]: r for r in journal(ray_dir)}
    by_local = {r["trial_id"]: r for r in journal(local_dir)}
    assert sorted(by_ray) == sorted(by_local) == list(range(8))
    assert {tuple(r["levels"]) for r in by_ray.values()} == {tuple(r["levels"]) for r in by_local.values()}
    for trial_id, record in by_local.items():
        other = by_ray[trial_id]
        assert other["levels"] == record["levels"]
        assert other["status"] == record["status"] == "ok"
        for metric in ("accuracy", "loss", "flops", "params", "kl_to_dense"):
            assert other["metrics"][metric] == record["metrics"][metric], (trial_id, metric)
    # a run of Ray workers exports in this process, like a local one
    out = tmp_path / "exported"
    assert main(["-q", "export", str(ray_dir), "--pick", "best", "--out", str(out), "--steps", "5"]) == 0
    assert json.loads((out / "recipe.json").read_text())["run_dir"] == str(ray_dir)


def test_latency_budget_tables_are_measured_on_a_worker(ray_instance: Any, tmp_path: Path) -> None:
    """The latency a search is held to is the workers' (their threads, their device), not the driver's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert main(["-q", "search", "--budget", "latency=0.9", "--trials", "2", "--fidelity", "5", "--bn-batches",
                     "1", "--executor", "ray", "--workers", "2", "--run-dir", str(tmp_path / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["latency_model"]["context"]["threads"] == 1
    assert info["dense_latency"]["threads"] == 1
    assert info["limits"]["latency"] > 0


def test_a_worker_killed_mid_evaluation_is_replaced_and_every_trial_is_journaled_once(
        ray_instance: Any, tmp_path: Path) -> None:
    from autoprune.config import SearchConfig
    from autoprune.executors.ray_executor import RayExecutor
    from autoprune.setup_run import prepare

    config = SearchConfig(budget=("flops=0.3",), trials=6, fidelity=100, bn_batches=2, seed=1,
                          executor="ray", workers=2)
    prepared = prepare(config)
    searcher = make_searcher("random", problem=prepared.problem, seed=config.seed)
    killed: list[dict] = []
    with RayExecutor.from_evaluator(prepared.evaluator, workers=2) as executor:

        def kill_a_busy_worker(_result: Any) -> None:
            busy = [w for w in executor.workers_info() if w["state"] == "busy"]
            if not killed and busy:
                killed.append(busy[0])
                os.kill(busy[0]["pid"], signal.SIGKILL)

        stats = run_loop(searcher=searcher, executor=executor, journal=Journal(tmp_path, writable=True), trials=config.trials,
                         default_fidelity=config.fidelity, seed=config.seed,
                         checkpoints=CheckpointStore(tmp_path / "checkpoints"), on_result=kill_a_busy_worker,
                         progress=False)
        usage = executor.utilisation()

        # trained weights come back when asked for, and a job can continue from them
        levels = np.array(journal(tmp_path)[0]["levels"], dtype=np.int64)
        (first,) = executor.run([Job(trial_id=100, levels=levels, fidelity=5, seed=1, keep_state=True)])
        assert first.ok and first.state and all(isinstance(v, torch.Tensor) for v in first.state.values())
        (second,) = executor.run([Job(trial_id=101, levels=levels, fidelity=5, seed=1, parent=100,
                                      init_state=first.state)])
        assert second.ok and second.state is None and second.parent == 100
    assert killed, "no worker was busy when the first result came back"
    records = journal(tmp_path)
    assert sorted(r["trial_id"] for r in records) == list(range(6)), "every trial exactly once"
    assert all(r["status"] == "ok" for r in records)
    assert stats.evaluated == 6 and stats.failed == 0
    assert usage["replaced"] == 1 and usage["retried"] == 1
    assert usage["jobs"] == 6
    assert {w["worker"] for w in usage["per_worker"]} == {0, 1}



def test_a_local_run_moves_to_ray_workers_on_resume_and_back(ray_instance: Any, tmp_path: Path) -> None:
    """Where trials are evaluated belongs to the machine, not the run: a resume may change it."""
    run_dir = tmp_path / "run"
    base = ["--budget", "flops=0.3", "--fidelity", "5", "--bn-batches", "1", "--seed", "2"]
    assert main(["-q", "search", *base, "--trials", "3", "--run-dir", str(run_dir)]) == 0
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "5", "--executor", "ray", "--workers", "1"]) == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["executor"] == "ray" and info["config"]["workers"] == 1
    assert info["sessions"][-1]["workers"]["workers"] == 1 and info["sessions"][-1]["evaluated"] == 2
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "6", "--executor", "local"]) == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["executor"] == "local" and info["config"]["workers"] is None
    assert [r["trial_id"] for r in journal(run_dir)] == list(range(6))
