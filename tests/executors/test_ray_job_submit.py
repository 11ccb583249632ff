"""A cluster job: ``ray start --head``, then ``ray job submit -- autoprune search ... --address auto``.

The head is started with ``--block`` and ended by signalling that one process (ours, by
id), which stops the processes it started: ``ray stop`` would end every Ray process on
the machine, other users' included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from ray_procs import descendants, end_processes, free_ports, journal

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))


def _ray(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def head(dense_cache: Path) -> Any:
    """A one-node cluster on this machine: 2 CPUs, its dashboard (the job server) on 127.0.0.1."""
    pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ap-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dashboard, agent, client = free_ports(4)
    # token authentication (on by default in Ray 2.60) with a token of this test's own, so
    # nothing is read from or written to ~/.ray; the job's driver inherits it from the head
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "AUTOPRUNE_CACHE": str(dense_cache)}
    process = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--port", str(gcs), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
         "--temp-dir", temp, "--disable-usage-stats"],
        env=env, cwd=temp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while _ray(["job", "list", "--address", url], env, 60).returncode != 0:
            assert process.poll() is None, f"ray start failed:\n{process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the head's job server did not come up in 120 s"
            time.sleep(1)
        yield {"url": url, "env": env}
    finally:
        stragglers = descendants(process.pid)
        end_processes([process.pid], grace=30)  # `ray start --block` stops what it started
        end_processes([p for p in stragglers if Path(f"/proc/{p}").exists()], grace=5)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_search_submitted_as_a_ray_job_writes_its_run_on_the_head(head: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "job-run"  # absolute: the job runs in a directory of Ray's choosing
    runtime_env = {"env_vars": {"AUTOPRUNE_CACHE": head["env"]["AUTOPRUNE_CACHE"]}}
    submitted = _ray(
        ["job", "submit", "--address", head["url"], "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "-m", "autoprune.cli", "search", "--budget", "flops=0.4", "--trials", "4", "--fidelity", "10",
         "--bn-batches", "1", "--executor", "ray", "--address", "auto", "--run-dir", str(run_dir)],
        head["env"], 300,
    )
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in submitted.stdout + submitted.stderr
    assert sorted(r["trial_id"] for r in journal(run_dir)) == [0, 1, 2, 3]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["executor"] == "ray" and info["config"]["address"] == "auto"
    assert info["sessions"][-1]["evaluated"] == 4
    assert f"run directory: {run_dir}" in submitted.stdout  # the job's log names where the run is
