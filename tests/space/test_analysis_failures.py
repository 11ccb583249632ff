"""Failures of the analysis name the layer they happened in (:mod:`autoprune.space.locate`); the
CLI cases (a channel shuffle, a GRU) are in tests/reliability/test_unsupported_models.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.space.analysis import build_search_space
from autoprune.space.levels import LevelGrid

GRID = LevelGrid(keep_ratios=(1.0, 0.5))


def test_a_model_that_fails_at_its_input_names_the_innermost_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 8, 3)), nn.Flatten())
    with pytest.raises(UserError, match=r"fails in layer '1\.1' \(Conv2d\) when run on one input of shape "
                                        r"\(1, 3, 12, 12\) \(RuntimeError: "):
        build_search_space(model, torch.randn(1, 3, 12, 12), grid=GRID, never_prune=[])

