"""Trained weights of evaluated trials, kept in ``RUN_DIR/checkpoints`` as safetensors.

Staged selection (DarwinLM) retrains survivors further instead of from scratch; keeping
the weights on disk in the run directory, not only in a worker's memory, is what lets a
resumed run or another worker continue a candidate where the last stage left it. Weights
are written durably before their trial is journaled, and those no later proposal can
continue are deleted as the search goes (:meth:`Searcher.live_checkpoints`): one file per
trial would fill a disk with a language model's weights.
"""

from __future__ import annotations

from pathlib import Path

import logging

import torch

from autoprune.store.files import sync_folder
from autoprune.weights import load_weights, save_weights


logger = logging.getLogger(__name__)
PATTERN = "trial-*.safetensors"


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

    def trial_ids(self) -> set[int]:
        """The trials whose weights are kept now."""
        if not self.folder.is_dir():
            return set()
        ids = set()
        for path in self.folder.glob(PATTERN):
            number = path.name[len("trial-"):-len(".safetensors")]
            if number.isdigit():
                ids.add(int(number))
        return ids

    def drop(self, told: set[int], live: set[int]) -> int:
        """Delete the weights of the trials in ``told`` but not in ``live``; how many went.

        Only trials the searcher has heard of may go: while a resumed run replays its
        journal, the searcher's idea of what is live is still an old one, and the weights
        of trials it has not been told of yet are what the rest of the replay leads to."""
        gone = sorted((self.trial_ids() & set(told)) - set(live))
        for trial_id in gone:
            self.path(trial_id).unlink(missing_ok=True)
        if gone:
            sync_folder(self.folder)
            logger.debug("deleted the kept weights of %d trials no proposal can continue", len(gone))
        return len(gone)
