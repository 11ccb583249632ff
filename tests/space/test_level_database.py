"""Candidates assembled from the level database equal materialised ones, for the whole zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autoprune.models import MODEL_NAMES, build_model, model_family
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.level_database import LevelDatabase, UnsupportedModel
from autoprune.space.levels import LevelGrid
from autoprune.space.materialize import materialize


def _zoo(name: str) -> tuple[nn.Module, torch.Tensor, list[str], object]:
    torch.manual_seed(0)
    in_channels, size = (1, 8) if name == "digitnet" else (3, 16)
    model = build_model(name, in_channels=in_channels, image_size=size, num_classes=10).eval()
    x = torch.randn(2, in_channels, size, size)
    config = load_space_config(model_family(name))
    never_prune = list(config.never_prune)
    space = build_search_space(model, x[:1], grid=config.grid, never_prune=never_prune)
    return model, x, never_prune, space


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_assembled_candidates_equal_materialised_ones(name: str) -> None:
    model, x, never_prune, space = _zoo(name)
    database = LevelDatabase.build(model, space, x[:1], never_prune=never_prune)
    rng = np.random.default_rng(1)
    candidates = [space.dense_candidate(), space.uniform_candidate(space.n_levels // 2),
                  *rng.integers(0, space.n_levels, size=(6, space.n_groups))]
    for levels in candidates:
        expected, expected_keep = materialize(model, space, levels, x[:1], never_prune=never_prune)
        assembled, keep = database.assemble(levels)
        assert keep == expected_keep
        assert expected.state_dict().keys() == assembled.state_dict().keys()
        for key, tensor in expected.state_dict().items():
            assert torch.equal(tensor, assembled.state_dict()[key]), key
        assert repr(expected) == repr(assembled)  # shape attributes (channels, groups, features) set too
        with torch.no_grad():
            assert torch.equal(expected(x), assembled(x))


def test_assembled_models_do_not_share_storage_with_the_cache_or_the_dense_model() -> None:
    model, x, never_prune, space = _zoo("digitnet")
    database = LevelDatabase.build(model, space, x[:1], never_prune=never_prune)
    levels = space.uniform_candidate(3)
    first, _ = database.assemble(levels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # training a candidate must not leak into the next one
        for p in first.parameters():
            p.add_(1.0)
    second, _ = database.assemble(levels)
    expected, _ = materialize(model, space, levels, x[:1], never_prune=never_prune)
    for key, tensor in expected.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key
    for key, tensor in before.items():
        assert torch.equal(tensor, model.state_dict()[key]), key


class _WithGroupNorm(nn.Module):
    """A GroupNorm follows a pruned convolution: a layer whose shape the database cannot set."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(torch.relu(self.norm(self.stem(x)))).mean((2, 3)))


def test_a_model_it_cannot_assemble_exactly_is_refused() -> None:
    model = _WithGroupNorm().eval()
    x = torch.randn(1, 1, 8, 8)
    grid = LevelGrid.from_dict({"keep_ratios": [1.0, 0.5], "min_channels": 1, "round_to": 1})
    space = build_search_space(model, x, grid=grid, never_prune=[])
    with pytest.raises(UnsupportedModel, match="GroupNorm"):
        LevelDatabase.build(model, space, x, never_prune=[])
