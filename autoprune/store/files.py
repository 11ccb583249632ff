"""Atomic, durable file writes: a temp file in the same folder, fsync, ``os.replace``,
then fsync of the folder.

A reader (or a crash) never sees half a file: it sees the old one or the new one; and once
the call returns, a power cut cannot take the new name away again (the rename itself is
only durable once the folder is synced).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from autoprune.errors import UserError


def file_mode() -> int:
    """Permissions of a new file, as ``open`` would give it (``mkstemp`` makes 0600): read
    from the kernel, as ``os.umask`` can only be read by setting it, for every thread."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644  # not Linux: the usual umask


def set_file_mode(path: str | Path) -> None:
    """Give a temp file the permissions of a plain new file, where the file system lets us."""
    with contextlib.suppress(OSError):  # some mounts refuse chmod; the file is still written
        os.chmod(path, file_mode())


def check_writable_folder(path: Path, flag: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written: its nearest
    existing ancestor must be a folder we may write into."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{str(path)!r} cannot be created: {str(existing)!r} is a file, not a folder; "
                        f"choose another {flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{str(path)!r} cannot be written: no permission to write in {str(existing)!r}; "
                        f"choose another {flag}.")


def replace_durably(tmp: str | Path, path: Path) -> None:
    """Move a finished temp file ``tmp`` onto ``path``, its bytes and its name on disk first."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename or removal inside it survives a crash (where the OS allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. a platform without directory handles: the write itself is still atomic
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        set_file_mode(tmp)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
        replace_durably(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
