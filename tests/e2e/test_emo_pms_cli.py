"""``emo-pms`` end to end through the CLI on the digits task: sub-network measurements
(with feature distortion at the stage boundary) journaled apart from the trials, whole
networks within the budget on the front, and a resume that replays everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.cli import main

COMMAND = ["-q", "search", "--budget", "flops=0.5", "--bn-batches", "1", "--fidelity", "3", "--seed", "2",
           "--threads", "1", "--searcher", "emo-pms", "--searcher-option", "pop_size=4", "--latency-repeats", "0",
           "--searcher-option", "generations=1", "--searcher-option", "calibration_samples=64", "--trials", "10"]


def test_emo_pms_searches_sub_networks_then_proposes_whole_networks(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main([*COMMAND, "--run-dir", str(run)]) == 0
    records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    measurements = [r for r in records if r.get("kind") == "measurement"]
    trials = [r for r in records if "kind" not in r]
    assert measurements and trials and all(r["status"] == "ok" for r in records)
    assert all(r["fidelity"] == 0 and "feature_distortion:stages.0" in r["metrics"] for r in measurements)
    assert all(r["metrics"]["flops_ratio"] <= 0.5 for r in trials)
    info = json.loads((run / "run.json").read_text())
    assert info["evaluator"]["feature_distortion"] is True
    report = info["searcher_report"]
    assert report["split"]["boundaries"] == ["stages.0", "output"] and len(report["fronts"]) == 2
    out = capsys.readouterr().out
    assert "emo-pms: 2 sub-networks ending at stages.0, output" in out
    assert main(["front", str(run)]) == 0  # the hypervolume and its fixed reference point
    shown = capsys.readouterr().out
    dense_error = 1.0 - info["dense"]["accuracy"]
    assert f"up to the reference point: error {dense_error + 0.25:.4f} (the dense model's {dense_error:.4f} + 0.25)" \
        in shown
    assert main(["-q", "search", "--resume", str(run)]) == 0
    assert "this session evaluated 0" in capsys.readouterr().out
    assert [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()] == records


@pytest.mark.slow
def test_feature_mimicking_trains_the_measured_sub_networks_only(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main([*COMMAND, "--searcher-option", "mimic_steps=4", "--run-dir", str(run)]) == 0
    records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    measurements = [r for r in records if r.get("kind") == "measurement"]
    dense = [r for r in measurements if r["metrics"]["flops_ratio"] == 1.0]
    pruned = [r for r in measurements if r["metrics"]["flops_ratio"] < 1.0]
    assert dense and all(r["fidelity"] == 0 for r in dense) and pruned  # one per scoring sample count
    assert all(r["fidelity"] == 4 and r["metrics"]["steps"] == 4 for r in pruned)
    assert all(r["fidelity"] == 3 for r in records if "kind" not in r)  # whole networks retrain on the task
    info = json.loads((run / "run.json").read_text())
    assert info["evaluator"]["measurement_training"] == "features"
    assert main(["-q", "search", "--resume", str(run)]) == 0
    assert [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()] == records
