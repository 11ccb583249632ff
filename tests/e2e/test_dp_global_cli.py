"""``dp`` and ``global`` end to end through the CLI on the built-in digits task.

``dp``: its probes are journaled as measurements, kept off the front and out of
``--trials``, a resume replays them, and the summary and run.json carry the additivity
check. ``global``: one candidate from Torch-Pruning's global ranking, within budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.cli import main

COMMON = ["-q", "search", "--budget", "flops=0.3", "--bn-batches", "1", "--seed", "1", "--fidelity", "5",
          "--latency-repeats", "0"]
DP = ["--searcher", "dp", "--searcher-option", "calibration_samples=64", "--searcher-option", "additivity_checks=4",
      "--searcher-option", "budget_fractions=[1.0, 0.8, 0.6]"]


def _journal(path: Path) -> list[dict]:
    lines = (path / "trials.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["trial_id"])


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "dp"
    assert main([*COMMON, *DP, "--trials", "2", "--run-dir", str(path)]) == 0
    return path


def test_dp_probes_are_measurements_off_the_front_and_out_of_the_trial_count(dp_run: Path) -> None:
    info = json.loads((dp_run / "run.json").read_text())
    records = _journal(dp_run)
    probes = [r for r in records if r.get("kind") == "measurement"]
    trials = [r for r in records if "kind" not in r]
    n_groups = len(info["space"]["groups"])
    assert len(trials) == 2, "--trials counts candidates only"
    assert len(probes) > n_groups and all(r["fidelity"] == 0 and r["eval_samples"] == 64 for r in probes)
    assert all("kl_to_dense" in r["metrics"] and "mse_to_dense" in r["metrics"] for r in probes)
    assert any(r["metrics"]["flops"] > 0.3 * info["dense"]["flops"] for r in probes), "probes go over budget"
    assert all(r["metrics"]["flops"] <= 0.3 * info["dense"]["flops"] and r["fidelity"] == 5 for r in trials)
    front = (dp_run / "front.csv").read_text().splitlines()
    ids = {int(line.split(",")[0]) for line in front[1:]}
    assert ids and ids <= {r["trial_id"] for r in trials}
    report = info["searcher_report"]
    assert report["additivity"]["checked"] == 4 and -1.0 <= report["additivity"]["spearman"] <= 1.0
    assert len(report["curves"]) == n_groups


def test_dp_summary_shows_measurements_apart_and_the_additivity_check(dp_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["-q", "search", "--resume", str(dp_run)]) == 0  # everything replayed: the summary again
    out = capsys.readouterr().out
    assert "trials: 2 (2 ok, 0 failed); this session evaluated 0" in out
    assert "measurements: " in out and "never on the front" in out
    assert "additivity check: Spearman" in out


def test_dp_resumed_with_more_trials_evaluates_no_probe_again(dp_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "dp"
    copy.mkdir()
    for name in ("run.json", "trials.jsonl"):
        (copy / name).write_bytes((dp_run / name).read_bytes())
    before = _journal(copy)
    assert main(["-q", "search", "--resume", str(copy), "--trials", "3"]) == 0
    after = _journal(copy)
    session = json.loads((copy / "run.json").read_text())["sessions"][-1]
    assert session["evaluated"] == 1 and session["replayed"] == len(before)
    assert after[: len(before)] == before


def test_global_proposes_one_candidate_from_the_global_ranking(tmp_path: Path) -> None:
    path = tmp_path / "global"
    assert main([*COMMON, "--searcher", "global", "--searcher-option", "importance=taylor",
                 "--run-dir", str(path)]) == 0
    info = json.loads((path / "run.json").read_text())
    (record,) = _journal(path)
    assert record["status"] == "ok" and record["metrics"]["flops"] <= 0.3 * info["dense"]["flops"]
    assert len(set(record["levels"])) > 1, "a global ranking prunes groups unevenly"
    assert info["searcher"]["importance"] == "taylor"


def test_global_refuses_an_unknown_importance(tmp_path: Path, capsys) -> None:
    code = main([*COMMON, "--searcher", "global", "--searcher-option", "importance=hessian",
                 "--run-dir", str(tmp_path / "bad")])
    assert code == 2
    err = capsys.readouterr().err
    assert "importance" in err and "Traceback" not in err and not (tmp_path / "bad").exists()


def test_dp_rounds_continue_the_last_rounds_model_and_resume(tmp_path: Path, capsys) -> None:
    """Two rounds on digits: round 2's probes and the final trials continue round 1's
    retrained allocation (a measurement over the final budget, off the front); a run
    stopped mid-round-2 resumes to the same journal."""
    path = tmp_path / "rounds"
    rounds = [*DP, "--searcher-option", "rounds=2", "--searcher-option", "round_steps=5"]
    assert main([*COMMON, *rounds, "--trials", "2", "--run-dir", str(path)]) == 0
    info = json.loads((path / "run.json").read_text())
    records = _journal(path)
    (step,) = [r for r in records if r.get("kind") == "measurement" and r["fidelity"] == 5]
    assert step["parent"] is None and step["status"] == "ok"
    assert step["metrics"]["flops"] > 0.3 * info["dense"]["flops"], "round 1 allocates for an intermediate budget"
    second = [r for r in records if r.get("kind") == "measurement" and r["parent"] == step["trial_id"]]
    assert second and all(r["status"] == "ok" and r["fidelity"] == 0 for r in second)
    assert all(r["metrics"]["flops"] <= step["metrics"]["flops"] for r in second), "round 2 prunes round 1's model"
    trials = [r for r in records if "kind" not in r]
    assert len(trials) == 2
    assert all(t["parent"] == step["trial_id"] and t["metrics"]["total_steps"] == 10 for t in trials)
    assert all(t["metrics"]["flops"] <= 0.3 * info["dense"]["flops"] for t in trials)
    front = (path / "front.csv").read_text().splitlines()
    assert {int(line.split(",")[0]) for line in front[1:]} <= {t["trial_id"] for t in trials}
    assert info["searcher"]["rounds"] == 2 and len(info["searcher_report"]["rounds"]) == 1
    assert "dp: round 1 of 2 allocated for flops<=" in capsys.readouterr().out

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "run.json").write_bytes((path / "run.json").read_bytes())
    cut = second[len(second) // 2]["trial_id"]
    lines = [line for line in (path / "trials.jsonl").read_text().splitlines() if json.loads(line)["trial_id"] < cut]
    (stopped / "trials.jsonl").write_text("\n".join(lines) + "\n")
    (stopped / "checkpoints").mkdir()
    kept = path / "checkpoints" / f"trial-{step['trial_id']}.safetensors"
    (stopped / "checkpoints" / kept.name).write_bytes(kept.read_bytes())
    assert main(["-q", "search", "--resume", str(stopped)]) == 0
    resumed = _journal(stopped)
    strip = [{k: v for k, v in r.items() if k not in ("finished_at", "metrics")} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k not in ("finished_at", "metrics")} for r in records]
    session = json.loads((stopped / "run.json").read_text())["sessions"][-1]
    assert session["replayed"] == len(lines) and session["evaluated"] == len(records) - len(lines)
