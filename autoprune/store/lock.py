"""One writer per run directory: an exclusive OS lock on ``run_dir/.lock``.

A search or a resume holds it for its whole life. It is ``flock``, so the kernel drops
it when the holding process ends in any way (a SIGKILL or a crash leaves no stale lock)
and the file itself may stay. The holder writes its pid and host into the file, so a
refused second writer can say who holds the run. Readers (``front``, ``export``,
``open_run``) take no lock: the journal is append-only and they read only whole lines.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from autoprune.errors import UserError

logger = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class RunLock:
    """The exclusive lock of one run directory, taken by :meth:`acquire`."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: str | Path) -> "RunLock":
        """Take the lock of ``run_dir`` (which must exist), or refuse in one sentence naming its holder."""
        path = Path(run_dir) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(f"{str(run_dir)!r} cannot be locked for writing ({exc.strerror}); "
                            "check that the folder is yours to write.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{str(run_dir)!r} is being written by another autoprune process ({holder}); "
                            "wait for it to finish or stop it, then resume.") from None
        except OSError as exc:  # a file system without flock (some network mounts)
            os.close(fd)
            raise UserError(f"{str(run_dir)!r} cannot be locked ({exc.strerror}); keep runs on a local "
                            "file system.") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
        except OSError:  # the lock holds without the note; a refused writer then names no holder
            logger.debug("could not write the holder into %s", path)
        return cls(Path(run_dir), fd)

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file means nobody writes)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    """``pid 123 on host h`` from the lock file, as far as it can be read."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(info['pid'])} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid and host unknown"
