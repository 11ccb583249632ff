"""``emo`` end to end through the CLI on the digits task: a front searched with a latency
objective (its latency model measured although no budget bounds latency), and a resume
mid-generation that matches an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autoprune.cli import main
from autoprune.space.latency_model import LatencyModel

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
