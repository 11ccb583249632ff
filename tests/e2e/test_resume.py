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
