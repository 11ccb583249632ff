"""``autoprune status`` on a search while it runs (in another process), after it was killed,
and once it finished; read without a lock, so it never gets in the writer's way."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoprune.cli import main


def _status(capsys, run_dir: Path) -> str:
    assert main(["status", str(run_dir)]) == 0
    return capsys.readouterr().out


def _wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the search did not get there in time"
        time.sleep(0.2)


def _journaled(run_dir: Path) -> int:
    path = run_dir / "trials.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_status_of_a_running_then_killed_search(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "running"
    search = subprocess.Popen(
        [sys.executable, "-m", "autoprune.cli", "-q", "search", "--trials", "400", "--fidelity", "30",
         "--bn-batches", "1", "--latency-repeats", "0", "--threads", "1", "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _journaled(run_dir) >= 3)
        out = _status(capsys, run_dir)
        assert "state: running: session 1 since" in out
        assert f"local executor with 1 worker, pid {search.pid} on host" in out
        done = int(re.search(r"trials: (\d+) of 400 done \(0 failed\)", out).group(1))
        assert done >= 3
        assert re.search(r"rate: [0-9.]+ trials/min over the last \d+; about .* left", out)
        assert "best so far: held-out accuracy" in out
        assert search.poll() is None, "reading the status did not disturb the search"
    finally:
        search.send_signal(signal.SIGKILL)
        search.wait()
    out = _status(capsys, run_dir)
    assert "state: stopped without closing its session 1" in out and "killed or crashed" in out
    assert f"autoprune search --resume {run_dir}" in out


def test_status_of_a_finished_run_and_of_one_without_trials(capsys, random_run: Path, tmp_path: Path) -> None:
    out = _status(capsys, random_run)
    assert "state: not running; 1 session" in out and "ended by: trial budget" in out
    assert "trials: 11 of 8 done (2 failed)" in out  # the fixture journaled three trials after the search
    info = json.loads((random_run / "run.json").read_text())
    assert "running" not in info["sessions"][-1], "a closed session replaces its open entry"
    # a run whose search has written run.json and opened its session, before any trial finished
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    info["sessions"] = [{"started": time.time(), "running": True, "host": os.uname().nodename, "pid": os.getpid(),
                         "executor": "local", "worker_count": 1}]
    (fresh / "run.json").write_text(json.dumps(info))
    (fresh / "trials.jsonl").write_text("")
    out = _status(capsys, fresh)
    assert "state: running: session 1" in out and "trials: none finished yet of 8" in out


def test_status_of_a_folder_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not an autoprune run" in err and err.count("\n") == 1
