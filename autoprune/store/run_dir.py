"""A run directory: ``run.json`` (configuration and context), ``trials.jsonl``, ``front.csv``.

A directory is created only after every input was checked, and refused when it
already holds a different run, so bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune.errors import UserError
from autoprune.store.files import check_writable_folder, write_json_atomic, write_text_atomic
from autoprune.store.journal import JOURNAL_NAME

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
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{str(path)!r} exists and is not an empty folder; choose another --run-dir.")
    check_writable_folder(path, "--run-dir")


def read_run(path: Path) -> dict[str, Any]:
    """The ``run.json`` of an existing run, or a clear error when ``path`` is not a run."""
    file = path / RUN_FILE
    if not path.is_dir():
        raise UserError(f"{str(path)!r} is not a folder; give the run directory that `autoprune search` printed.")
    if not file.is_file():
        raise UserError(f"{str(path)!r} is not an autoprune run (it has no {RUN_FILE}).")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{str(file)!r} is damaged (not valid JSON); the run cannot be read.") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION or "config" not in data:
        raise UserError(f"{str(file)!r} is not a run file this version of autoprune can read.")
    return data


def create_run(path: Path, info: dict[str, Any]) -> None:
    check_new_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / RUN_FILE, {"format_version": FORMAT_VERSION, **info})
        (path / JOURNAL_NAME).touch()
    except OSError as exc:  # what check_new_run_dir cannot foresee (a read-only or virtual file system)
        raise UserError(f"{str(path)!r} cannot be written ({exc.strerror}); choose another --run-dir.") from None


def update_run(path: Path, info: dict[str, Any]) -> None:
    write_json_atomic(path / RUN_FILE, info)


def write_front(path: Path, front: pd.DataFrame) -> None:
    write_text_atomic(path / FRONT_FILE, front.to_csv(index=False))
