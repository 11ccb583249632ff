"""Trained weights of evaluated trials, kept in ``RUN_DIR/checkpoints`` as safetensors.

Staged selection (DarwinLM) retrains survivors further instead of from scratch; keeping
the weights on disk in the run directory, not only in a worker's memory, is what lets a
resumed run or another worker continue a candidate where the last stage left it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from autoprune.weights import load_weights, save_weights


class CheckpointStore:
    """``trial-<id>.safetensors`` files under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, trial_id: int) -> Path:
        return self.folder / f"trial-{trial_id}.safetensors"

    def save(self, trial_id: int, state: dict[str, torch.Tensor]) -> None:
        save_weights(state, self.path(trial_id))

    def load(self, trial_id: int) -> dict[str, torch.Tensor] | None:
        """The weights of ``trial_id``, or None when they were never kept."""
        path = self.path(trial_id)
        return load_weights(path) if path.is_file() else None
