"""``emo`` end to end through the CLI on the digits task: a front searched with a latency
objective (its latency model measured although no budget bounds latency), and a resume
mid-generation that matches an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autoprune.cli import main
from autoprune.space.latency_model import LatencyModel
from autoprune.store.front import pareto_front, trials_table

COMMON = ["-q", "search", "--budget", "flops=0.5", "--bn-batches", "1", "--fidelity", "3", "--seed", "2",
          "--searcher", "emo", "--searcher-option", "pop_size=6",
          "--searcher-option", "objectives=error,flops,latency"]


def _journal(path: Path) -> list[dict]:
    lines = (path / "trials.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["trial_id"])


def test_a_latency_objective_without_a_latency_budget_gets_the_latency_model(tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*COMMON, "--trials", "14", "--run-dir", str(whole)]) == 0
    info = json.loads((whole / "run.json").read_text())
    assert set(info["limits"]) == {"flops"} and info["latency_model"] is not None
    model = LatencyModel.from_dict(info["latency_model"])
    records = _journal(whole)
    assert len(records) == 14 and all(r["status"] == "ok" for r in records)
    predicted = model.predict(np.array([r["levels"] for r in records]))
    assert np.all(predicted > 0) and np.ptp(predicted) > 0
    # killed inside the second generation (trials 6-11), resumed: the same trials
    assert main([*COMMON, "--trials", "9", "--run-dir", str(cut)]) == 0
    assert main(["-q", "search", "--resume", str(cut), "--trials", "14"]) == 0
    assert [r["levels"] for r in _journal(cut)] == [r["levels"] for r in records]


def test_training_aware_emo_continues_survivors_from_their_weights_onto_the_front(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["-q", "search", "--budget", "flops=0.5", "--bn-batches", "1", "--seed", "2", "--threads", "1",
                 "--latency-repeats", "0", "--searcher", "emo", "--searcher-option", "pop_size=4",
                 "--searcher-option", "fidelities=[1, 3]", "--trials", "12", "--run-dir", str(run)]) == 0
    records = {r["trial_id"]: r for r in _journal(run)}
    continued = [r for r in records.values() if r.get("parent") is not None]
    assert continued and all(r["fidelity"] == 2 and r["status"] == "ok" for r in continued)
    assert all(records[r["parent"]]["fidelity"] == 1 and records[r["parent"]]["levels"] == r["levels"]
               for r in continued)
    assert all(r["metrics"]["steps"] == 2 for r in continued)
    info = json.loads((run / "run.json").read_text())
    assert info["searcher"]["fidelities"] == [1, 3]
    table = trials_table(list(records.values()), [g["name"] for g in info["space"]["groups"]], info["limits"])
    front = pareto_front(table)
    assert not front.empty and set(front["trial_id"]) <= {r["trial_id"] for r in continued}
