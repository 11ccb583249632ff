"""A run directory: ``run.json`` (configuration and context), ``trials.jsonl``, ``front.csv``.

A directory is created only after every input was checked, and refused when it
already holds a different run, so bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune.errors import UserError
from autoprune.store.files import check_writable_folder, write_json_atomic, write_text_atomic
from autoprune.store.journal import JOURNAL_NAME
from autoprune.store.lock import LOCK_NAME, RunLock

RUN_FILE = "run.json"
FRONT_FILE = "front.csv"
FORMAT_VERSION = 1


def check_new_run_dir(path: Path) -> None:
    """Refuse a directory that already holds a run, or other files."""
    if (path / RUN_FILE).exists():
        raise UserError(
            f"{str(path)!r} already holds a run; continue it with `autoprune search --resume {path}` "
            "or choose another --run-dir."
        )
    if path.exists() and (not path.is_dir() or any(p.name != LOCK_NAME for p in path.iterdir())):
        raise UserError(f"{str(path)!r} exists and is not an empty folder; choose another --run-dir.")
    check_writable_folder(path, "--run-dir")


#: the sections of run.json every reader relies on, and the JSON type each must have
SECTIONS: dict[str, tuple[type, ...]] = {
    "config": (dict,), "space": (dict,), "limits": (dict,), "dense": (dict,), "sessions": (list,),
}
#: sections that may be missing or null
OPTIONAL_SECTIONS: dict[str, tuple[type, ...]] = {
    "latency_model": (dict,), "data_fingerprint": (str,), "incumbent": (int,), "model_spec": (dict,), "quality": (dict,),
    "searcher_report": (dict,),
}


def read_run(path: Path) -> dict[str, Any]:
    """The ``run.json`` of an existing run, checked section by section, or a clear error
    when ``path`` is not a run (or its run.json is damaged)."""
    if not isinstance(path, (str, Path)):
        raise UserError(f"a run directory must be a path, got {type(path).__name__}; give the folder that "
                        "`autoprune search` printed.")
    path = Path(path)
    file = path / RUN_FILE
    if not path.is_dir():
        raise UserError(f"{str(path)!r} is not a folder; give the run directory that `autoprune search` printed.")
    if not file.is_file():
        raise UserError(f"{str(path)!r} is not an autoprune run (it has no {RUN_FILE}).")
    try:
        data = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(file)!r} is damaged (not valid JSON); the run cannot be read.") from None
    except OSError as exc:
        raise UserError(f"{str(file)!r} cannot be read ({exc.strerror}).") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{str(file)!r} is not a run file this version of autoprune can read.")
    for section, kinds in {**SECTIONS, **OPTIONAL_SECTIONS}.items():
        value = data.get(section)
        if value is None and section in OPTIONAL_SECTIONS:
            continue
        if section not in data or not isinstance(value, kinds) or isinstance(value, bool):
            wanted = {dict: "a mapping", list: "a list", str: "text", int: "a whole number"}[kinds[0]]
            found = "missing" if section not in data else f"{type(value).__name__}, not {wanted}"
            raise UserError(f"{str(file)!r} is damaged: its {section!r} section is {found}; the run cannot be read.")
    return data


def section_error(path: Path, section: str, exc: BaseException) -> UserError:
    """One sentence for a run.json section whose content cannot be used."""
    detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
    return UserError(f"{str(path / RUN_FILE)!r} is damaged: its {section!r} section cannot be read ({detail}); "
                     "the run cannot be read.")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def create_run(path: Path, info: dict[str, Any]) -> RunLock:
    """Make the run directory, take its lock (:mod:`autoprune.store.lock`) and write
    ``run.json``; returns the held lock. On a write error (a full disk, a read-only mount)
    nothing is left behind: a folder made here is removed."""
    check_new_run_dir(path)
    made = not path.exists()
    lock: RunLock | None = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock.acquire(path)
        if (path / RUN_FILE).exists():  # another search made this run since check_new_run_dir
            raise UserError(f"{str(path)!r} already holds a run, started just now by another process; "
                            "choose another --run-dir.")
        write_json_atomic(path / RUN_FILE, {"format_version": FORMAT_VERSION, **info})
        (path / JOURNAL_NAME).touch()
    except BaseException as exc:
        if lock is not None:
            lock.release()
        if made and lock is not None and not isinstance(exc, UserError):
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(exc, OSError):  # what check_new_run_dir cannot foresee
            raise UserError(f"{str(path)!r} cannot be written ({exc.strerror}); "
                            f"{'free some space' if exc.errno in DISK_FULL else 'choose another --run-dir'}.") from None
        raise
    return lock


def update_run(path: Path, info: dict[str, Any]) -> None:
    write_json_atomic(path / RUN_FILE, info)


def write_front(path: Path, front: pd.DataFrame) -> None:
    write_text_atomic(path / FRONT_FILE, front.to_csv(index=False))
