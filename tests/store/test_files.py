"""Atomic writes keep the permissions any other file written here would get."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from autoprune.store.files import write_json_atomic
from autoprune.weights import save_weights


def test_atomic_writes_get_the_umasks_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # under 077 a plain file is 0600 too, and the test could not tell
    try:
        write_json_atomic(tmp_path / "run.json", {"a": 1})
        save_weights({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(previous)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("run.json", "model.safetensors", "plain.json")}
    assert set(modes.values()) == {0o644}, modes
