"""Helpers of the reliability tests: a real run directory made once, CLI calls in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEARCH = ["search", "--trials", "4", "--fidelity", "2", "--bn-batches", "1", "--budget", "flops=0.5", "--seed", "3"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """``autoprune ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "autoprune.cli", "-q", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=child_env(**env))


def python(code: str, *, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter with ``-P``: Python itself then puts no folder of
    ours on ``sys.path``, so whatever ``cwd`` holds is imported only if autoprune imports it."""
    return subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=child_env())


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, **extra}


def lines(run_dir: Path) -> list[bytes]:
    return (run_dir / "trials.jsonl").read_bytes().splitlines(keepends=True)


def trial_ids(run_dir: Path) -> list[int]:
    """Trial ids of the journal's complete lines (one the writer is still writing, or a
    kill cut short, is left out, as a resume leaves it out)."""
    return [json.loads(line)["trial_id"] for line in lines(run_dir) if line.endswith(b"\n")]


def sessions(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "run.json").read_text())["sessions"]
