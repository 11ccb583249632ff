"""Atomic writes keep the permissions any other file written here would get."""

from __future__ import annotations

import os
from pathlib import Path

from autoprune.store.files import write_json_atomic


def test_atomic_writes_get_the_umasks_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_json_atomic(tmp_path / "run.json", {"a": 1})
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777 \
        == 0o666 & ~umask
