"""End to end through the CLI on the digits task: search, front, export, load elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from autoprune.cli import main
from autoprune.space.counting import count

FAST = ["--trials", "6", "--fidelity", "20", "--bn-batches", "2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["-q", "search", "--budget", "flops=0.4", *FAST, "--run-dir", str(path)]) == 0
    return path


def test_run_directory_holds_config_journal_and_front(run_dir: Path) -> None:
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["budget"] == ["flops=0.4"]
    assert info["config"]["seed"] == 0
    assert info["dense"]["test_accuracy"] >= 0.97
    assert info["environment"]["packages"]["torch"]
    assert info["environment"]["allocator"] == "glibc, buffers kept"  # latency timed without page faults
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["trial_id"] for line in lines) == list(range(6))
    front = pd.read_csv(run_dir / "front.csv")
    assert len(front) >= 1
    assert (front["flops"] <= 0.4 * info["dense"]["flops"]).all()
    level_columns = [c for c in front.columns if c.startswith("level:")]
    assert len(level_columns) == len(info["space"]["groups"])


def test_front_command_prints_the_front(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["front", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "trial_id" in out and "MACs" in out
    assert main(["front", str(run_dir), "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 6


def test_export_then_load_in_a_fresh_process(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "exported"
    assert main(["-q", "export", str(run_dir), "--pick", "best", "--out", str(out), "--steps", "20"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    recipe = json.loads((out / "recipe.json").read_text())
    assert 0.0 <= recipe["metrics"]["test_accuracy"] <= 1.0
    code = (
        "import json, sys, torch, autoprune\n"
        "from autoprune.space.counting import count\n"
        f"m = autoprune.load({str(out)!r})\n"
        f"c = count(m, torch.zeros(1, 1, 8, 8))\n"
        "print(json.dumps({'flops': c.flops, 'params': c.params, 'shape': list(m(torch.zeros(2, 1, 8, 8)).shape)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["shape"] == [2, 10]
    assert loaded["flops"] == recipe["metrics"]["flops"]
    assert loaded["flops"] <= 0.4 * recipe["dense"]["flops"]
    assert loaded["params"] < recipe["dense"]["params"]


def test_exported_weights_reproduce_the_reported_accuracy(run_dir: Path, tmp_path: Path) -> None:
    import autoprune
    from autoprune.data import load_data
    from autoprune.evaluation.training import measure

    run = autoprune.open_run(run_dir)
    recipe = run.export(tmp_path / "e", pick="best", steps=10)
    model = autoprune.load(tmp_path / "e")
    data = load_data("digits")
    accuracy, _ = measure(model, data, data.test)
    assert accuracy == pytest.approx(recipe["metrics"]["test_accuracy"])
    assert count(model, torch.zeros(1, 1, 8, 8)).flops == recipe["metrics"]["flops"]


def test_python_api_mirrors_the_cli(tmp_path: Path) -> None:
    import autoprune

    run = autoprune.search(run_dir=tmp_path / "api", budget=["flops=0.5", "params=0.6"], searcher="random",
                           trials=4, fidelity=10, bn_batches=1, seed=3, progress=False)
    assert isinstance(run.front, pd.DataFrame) and not run.front.empty
    assert (run.trials["flops"] <= 0.5 * run.dense["flops"]).all()
    assert (run.trials["params"] <= 0.6 * run.dense["params"]).all()
    row = run.pick("best")
    assert row["accuracy"] == run.front["accuracy"].max()
    assert run.pick(int(row["trial_id"]))["trial_id"] == row["trial_id"]


def test_uniform_searcher_evaluates_one_candidate(tmp_path: Path) -> None:
    import autoprune

    run = autoprune.search(run_dir=tmp_path / "u", searcher="uniform", trials=5, fidelity=5, bn_batches=1,
                           progress=False)
    assert len(run.trials) == 1
    levels = run.trials.filter(like="level:").iloc[0]
    assert levels.nunique() == 1


def test_a_budget_the_dense_model_already_meets_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["-q", "search", "--budget", "flops=1", "--trials", "1", "--fidelity", "2",
                 "--run-dir", str(tmp_path / "run")]) == 0
    assert "budget flops=1 does not bind: the dense model already meets it" in caplog.text


def test_two_runs_with_one_thread_and_no_latency_write_the_same_front(tmp_path: Path) -> None:
    """What the README promises a user repeating a run: the same seed, thread count and no
    measured latency give the same scores to the bit and so the same front."""
    fronts = []
    for name in ("first", "second"):
        path = tmp_path / name
        assert main(["-q", "search", "--budget", "flops=0.4", *FAST, "--trials", "10", "--threads", "1",
                     "--latency-repeats", "0", "--run-dir", str(path)]) == 0
        front = pd.read_csv(path / "front.csv").drop(columns=["finished_at", "seconds"])
        assert len(front) >= 2 and front["latency_ms"].isna().all()
        fronts.append(front)
    pd.testing.assert_frame_equal(fronts[0], fronts[1])
