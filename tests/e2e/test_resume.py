"""A search killed with SIGKILL midway and resumed ends with every trial journaled once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoprune.cli import main

ARGS = ["search", "--budget", "flops=0.3", "--trials", "10", "--fidelity", "40", "--bn-batches", "2", "--seed", "5"]


def _journal(path: Path) -> list[dict]:
    file = path / "trials.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.endswith("}")]


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "autoprune.cli", "-q", *ARGS, "--run-dir", str(run_dir)],
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while len(_journal(run_dir)) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the search did not journal 3 trials in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {r["trial_id"]: r for r in _journal(run_dir)}
    assert 3 <= len(before) < 10

    assert main(["-q", "search", "--resume", str(run_dir)]) == 0
    after = _journal(run_dir)
    ids = [r["trial_id"] for r in after]
    assert sorted(ids) == list(range(10)), "every trial exactly once"
    for record in after:  # what was journaled before the kill is untouched
        if record["trial_id"] in before:
            assert record == before[record["trial_id"]]
    info = json.loads((run_dir / "run.json").read_text())
    session = info["sessions"][-1]
    assert session["evaluated"] == 10 - len(before)
    assert session["replayed"] == len(before)


def test_resume_continues_with_more_trials_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    short, full = tmp_path / "short", tmp_path / "full"
    common = ["-q", "search", "--budget", "flops=0.3", "--fidelity", "5", "--bn-batches", "1", "--seed", "2"]
    assert main([*common, "--trials", "3", "--run-dir", str(short)]) == 0
    assert main(["-q", "search", "--resume", str(short), "--trials", "6"]) == 0
    assert main([*common, "--trials", "6", "--run-dir", str(full)]) == 0
    levels = lambda p: sorted(tuple(r["levels"]) for r in _journal(p))  # noqa: E731
    assert levels(short) == levels(full)


def test_a_latency_run_resumes_and_exports_with_the_latency_model_it_was_searched_with(tmp_path: Path,
                                                                                        dense_cache: Path) -> None:
    short = tmp_path / "short"
    common = ["-q", "search", "--budget", "latency=0.9", "--fidelity", "5", "--bn-batches", "1", "--seed", "3"]
    assert main([*common, "--trials", "3", "--run-dir", str(short)]) == 0
    stored = json.loads((short / "run.json").read_text())["latency_model"]
    for tables in dense_cache.glob("latency-*.json"):
        tables.unlink()  # measured again, tables differ a little and the searcher would propose other trials
    assert main(["-q", "search", "--resume", str(short), "--trials", "6"]) == 0
    assert main(["-q", "export", str(short), "--pick", "best", "--steps", "1", "--out", str(tmp_path / "x")]) == 0
    assert not list(dense_cache.glob("latency-*.json")), "resume and export measured no tables"
    assert json.loads((short / "run.json").read_text())["latency_model"] == stored
    assert [r["trial_id"] for r in _journal(short)] == list(range(6))


def test_a_resume_refused_while_replaying_keeps_the_runs_choice_and_config(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    darwin = ["--searcher", "darwin", "--searcher-option", "offspring=4", "--searcher-option", "survivors=[2, 1]",
              "--searcher-option", "stage_steps=[2, 4]", "--searcher-option", "stage_samples=[128, 256]"]
    assert main(["-q", "search", *darwin, "--trials", "12", "--bn-batches", "1", "--run-dir", str(run_dir)]) == 0
    before = json.loads((run_dir / "run.json").read_text())
    assert before["incumbent"] is not None
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record["levels"] = [level + 1 for level in record["levels"]]  # a journal this searcher did not write
    lines[1] = json.dumps(record)
    (run_dir / "trials.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "20"]) == 2
    assert "cannot be resumed: trial 1 in its journal differs" in capsys.readouterr().err
    after = json.loads((run_dir / "run.json").read_text())
    assert after["incumbent"] == before["incumbent"] and after["config"] == before["config"]
    assert after["sessions"][-1]["stopped_by"] == "error: UserError"


def test_a_run_does_not_continue_or_export_on_data_that_changed(tmp_path: Path, monkeypatch, capsys,
                                                                 dense_cache: Path) -> None:
    (tmp_path / "shifting_data.py").write_text(
        "import os\nimport torch\n\n"
        "def data():\n"
        "    x = torch.rand(90, 1, 8, 8, generator=torch.Generator().manual_seed(0))\n"
        "    x = x + float(os.environ.get('DATA_SHIFT', '0'))\n"
        "    y = torch.arange(90) % 3\n"
        "    return (x[:72], y[:72]), (x[72:], y[72:])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "run"
    common = ["--data", "shifting_data:data", "--model", "digitnet", "--fidelity", "2", "--bn-batches", "1"]
    assert main(["-q", "search", *common, "--trials", "2", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "3"]) == 2, "a factory runs only with consent"
    assert "names the factory 'shifting_data:data'" in capsys.readouterr().err
    resume = ["-q", "search", "--resume", str(run_dir), "--trust-factory"]
    assert main([*resume, "--trials", "3"]) == 0, "the same data continues"
    monkeypatch.setenv("DATA_SHIFT", "1")
    dense_models = sorted(dense_cache.glob("dense-*"))
    capsys.readouterr()
    assert main([*resume, "--trials", "4"]) == 2
    assert "the run was searched on other data than 'shifting_data:data' gives now" in capsys.readouterr().err
    assert main(["-q", "export", str(run_dir), "--pick", "best", "--out", str(tmp_path / "x"), "--trust-factory"]) == 2
    assert len(_journal(run_dir)) == 3 and not (tmp_path / "x").exists()
    assert sorted(dense_cache.glob("dense-*")) == dense_models, "refused before a dense model trained on the new data"
