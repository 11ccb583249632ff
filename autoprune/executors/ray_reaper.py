"""A watcher that ends the local Ray instance a driver started once the driver is gone.

Ray ties its GCS server and raylet to the driver that started them, but the agents the
raylet starts (dashboard agent, runtime-env agent) and idle workers are reparented when
the driver is killed and linger on. So a driver that starts its own instance also starts
this watcher: a small process in its own session that, while the driver lives, notes
every Ray process descended from it, and when the driver's pipe closes (a normal close,
a crash or a SIGKILL alike) ends the noted processes still alive, by id and start time,
with SIGTERM and then SIGKILL. A joined or borrowed cluster is never watched: it is not ours.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: seconds between two looks at the driver's process tree
POLL_SECONDS = 0.5
#: seconds a process has to end after SIGTERM before it gets SIGKILL
GRACE_SECONDS = 3.0


def _table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every process, from /proc."""
    table: dict[int, tuple[int, str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), fields[19], command)
    return table


def _descendants(root: int, table: dict[int, tuple[int, str, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def watch(driver: int, pipe: int) -> None:
    """Note the Ray processes under ``driver`` until ``pipe`` closes, then end those left."""
    noted: dict[int, str] = {}
    me = os.getpid()
    while True:
        table = _table()
        for pid in _descendants(driver, table):
            if pid != me and "ray" in table[pid][2]:
                noted.setdefault(pid, table[pid][1])
        ready, _, _ = select.select([pipe], [], [], POLL_SECONDS)
        if ready and not os.read(pipe, 4096):
            break  # the driver closed its end, or died
    table = _table()
    for pid in list(noted):  # what the noted ones started since the last look
        if _alive(pid, noted[pid]):
            for child in _descendants(pid, table):
                noted.setdefault(child, table[child][1])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [pid for pid, started in noted.items() if _alive(pid, started)]
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [pid for pid in left if _alive(pid, noted[pid])]
        if not left:
            return


class Reaper:
    """The watcher of this driver's own Ray instance; :meth:`close` after ``ray.shutdown``."""

    def __init__(self) -> None:
        read, self._write = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "autoprune.executors.ray_reaper", str(os.getpid()), str(read)],
            pass_fds=(read,), start_new_session=True,  # its own session: a group kill of ours spares it
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(read)

    def close(self, *, wait: float = 10.0) -> None:
        """Tell the watcher we are done (it ends what ``ray.shutdown`` left) and wait for it."""
        if self._write < 0:
            return
        os.close(self._write)
        self._write = -1
        try:
            self._process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            logger.warning("the Ray watcher (pid %d) is still ending leftover Ray processes", self._process.pid)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the driver's terminal is the driver's
    watch(int(sys.argv[1]), int(sys.argv[2]))
