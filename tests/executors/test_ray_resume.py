"""A ``--executor ray`` search whose driver is killed with SIGKILL resumes with every trial once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ray_procs import descendants, end_processes, journal

from autoprune.cli import main

pytestmark = pytest.mark.ray

ARGS = ["search", "--budget", "flops=0.3", "--trials", "8", "--fidelity", "60", "--bn-batches", "2", "--seed", "4",
        "--executor", "ray", "--workers", "2"]


def test_a_killed_ray_driver_resumes_without_losing_or_repeating_trials(ray_instance: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # the driver starts its own local Ray instance (no --address), as a user's would
    driver = subprocess.Popen([sys.executable, "-m", "autoprune.cli", "-q", *ARGS, "--run-dir", str(run_dir)],
                              env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ray_processes: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(journal(run_dir)) < 3:
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the search did not journal 3 trials in time"
            time.sleep(0.05)
        ray_processes = descendants(driver.pid)  # its Ray instance: GCS, raylet, agents, workers
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        # Ray's own processes mostly die with the driver; end the stragglers we started, by id
        end_processes(ray_processes)
    before = {r["trial_id"]: r for r in journal(run_dir)}
    assert 3 <= len(before) < 8

    # resumed in this process: the executor joins the session's Ray instead of starting one
    assert main(["-q", "search", "--resume", str(run_dir)]) == 0
    after = journal(run_dir)
    assert sorted(r["trial_id"] for r in after) == list(range(8)), "every trial exactly once"
    for record in after:
        if record["trial_id"] in before:
            assert record == before[record["trial_id"]]
    session = json.loads((run_dir / "run.json").read_text())["sessions"][-1]
    assert session["evaluated"] == 8 - len(before)
    assert session["replayed"] == len(before)
