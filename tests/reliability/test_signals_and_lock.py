"""One writer per run (two processes), and SIGTERM handled like Ctrl-C under both executors,
with no Ray process of ours outliving its driver."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import child_env, cli, sessions, trial_ids

sys.path.insert(0, str(Path(__file__).parents[1] / "executors"))
from ray_procs import _alive, descendants, end_processes  # noqa: E402

#: more trials than any test lets finish: every test stops the search by signal, and a search that
#: ended first (fast machine, slow CLI start-up of the second process) would pass nothing on
LONG = ["search", "--trials", "400", "--fidelity", "30", "--bn-batches", "1", "--budget", "flops=0.5", "--seed", "1"]


def _start(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "autoprune.cli", "-q", *LONG, *extra, "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env())


def _wait_for_trials(process: subprocess.Popen[str], run_dir: Path, n: int, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not ((run_dir / "trials.jsonl").exists() and len(trial_ids(run_dir)) >= n):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"the search did not journal {n} trials in time"
        time.sleep(0.1)


def _stop_with_sigterm(process: subprocess.Popen[str], run_dir: Path) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    assert f"stopped by SIGTERM; resume with: autoprune search --resume {run_dir}" in err
    assert sessions(run_dir)[-1]["stopped_by"] == "stopped by SIGTERM"
    raw = (run_dir / "trials.jsonl").read_bytes()
    assert raw.endswith(b"\n"), "the journal line in progress was finished"
    return err


def test_a_second_writer_is_refused_and_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = _start(run_dir)
    try:
        _wait_for_trials(process, run_dir, 2)
        second = cli("search", "--resume", str(run_dir), "--trials", "41")
        assert second.returncode == 2, second.stderr
        assert f"is being written by another autoprune process (pid {process.pid} on host {socket.gethostname()})" \
            in second.stderr and second.stderr.count("\n") == 1
        reader = cli("front", str(run_dir))  # readers need no lock
        assert reader.returncode == 0, reader.stderr
        _stop_with_sigterm(process, run_dir)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = trial_ids(run_dir)
    resumed = cli("search", "--resume", str(run_dir), "--trials", str(len(before) + 1))
    assert resumed.returncode == 0, resumed.stderr  # the lock died with its holder
    assert sorted(trial_ids(run_dir)) == list(range(len(before) + 1)), "every trial once"


def test_a_sigkilled_writer_leaves_no_stale_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # before the holder starts: RunLock.acquire needs the folder
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from autoprune.store.lock import RunLock; "
         "RunLock.acquire(sys.argv[1]); print('held', flush=True); sys.stdin.read()", str(run_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        from autoprune.errors import UserError
        from autoprune.store.lock import RunLock

        with pytest.raises(UserError, match=f"pid {holder.pid} on host"):
            RunLock.acquire(run_dir)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        RunLock.acquire(run_dir).release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.ray
def test_sigterm_under_ray_stops_cleanly_and_leaves_no_ray_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run_dir = tmp_path / "run"
    process = _start(run_dir, "--executor", "ray", "--workers", "1")
    ours: list[int] = []
    try:
        _wait_for_trials(process, run_dir, 2)
        ours = descendants(process.pid)
        assert ours, "the driver started Ray processes"
        _stop_with_sigterm(process, run_dir)
        deadline = time.monotonic() + 30
        while [p for p in ours if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [p for p in ours if _alive(p)], "no Ray process of ours outlives the driver"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        end_processes(ours, grace=2)


@pytest.mark.ray
def test_a_sigkilled_ray_driver_leaves_no_ray_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run_dir = tmp_path / "run"
    process = _start(run_dir, "--executor", "ray", "--workers", "1")
    ours: list[int] = []
    try:
        _wait_for_trials(process, run_dir, 1)
        ours = descendants(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 30
        while [p for p in ours if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [(p, Path(f"/proc/{p}/cmdline").read_bytes()[:80]) for p in ours if _alive(p)]
        assert not left, f"Ray processes outlived the killed driver: {left}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        end_processes(ours, grace=2)
    # the killed session could not close its entry: it stays marked running, with the pid that
    # `autoprune status` finds gone (so it says the run was killed and how to resume)
    (session,) = json.loads((run_dir / "run.json").read_text())["sessions"]
    assert session["running"] is True and session["pid"] == process.pid and "seconds" not in session
    status = cli("status", str(run_dir))
    assert status.returncode == 0 and "stopped without closing its session 1" in status.stdout
