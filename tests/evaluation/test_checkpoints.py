"""Kept weights: written whole, read back, and deleted only once the searcher has heard of them."""

from __future__ import annotations

from pathlib import Path

import torch

from autoprune.evaluation.checkpoints import CheckpointStore


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), value)}


def test_weights_come_back_as_saved_and_missing_ones_are_none(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.load(4) is None and store.trial_ids() == set()
    store.save(4, _state(1.5))
    assert torch.equal(store.load(4)["w"], _state(1.5)["w"])
    assert store.trial_ids() == {4}
    assert not [p for p in store.folder.iterdir() if p.name.startswith(".")], "no temp file left behind"


def test_only_told_trials_that_are_not_live_are_deleted(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    for trial_id in range(6):
        store.save(trial_id, _state(trial_id))
    (store.folder / "notes.txt").write_text("a user's file")  # not ours: never touched
    assert store.drop(told={0, 1, 2, 3}, live={1}) == 3
    assert store.trial_ids() == {1, 4, 5}, "4 and 5 were not told yet: a replay may still need them"
    assert (store.folder / "notes.txt").exists()
    assert store.drop(told={0, 1, 2, 3}, live={1}) == 0
