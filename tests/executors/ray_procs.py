"""Helpers of the Ray tests: free ports, a process's descendants, ending our processes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from pathlib import Path


#: where :func:`free_ports` draws from: below Linux's ephemeral range (32768 on), where Ray's
#: own components bind port 0 between our draw and ``ray start``, and above Ray's default
#: worker ports (10002-19999)
PORT_RANGE = (20000, 32767)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now, from :data:`PORT_RANGE`."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randint(*PORT_RANGE)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def descendants(pid: int) -> list[int]:
    """Process ids of every live descendant of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end_processes(pids: list[int], *, grace: float = 10.0) -> None:
    """SIGTERM the given processes (ours, by id), then SIGKILL what is left after ``grace`` s."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def journal(run_dir: Path) -> list[dict]:
    """Complete lines of ``trials.jsonl`` (a torn last line left out)."""
    file = run_dir / "trials.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines(keepends=True) if line.endswith("\n")]
