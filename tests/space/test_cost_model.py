"""The cost model must equal counting the materialised model, exactly, for the whole zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.models import MODEL_NAMES, build_model, model_family
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.counting import count
from autoprune.space.materialize import materialize



@pytest.mark.parametrize(
    "n_candidates", [pytest.param(40, id="40"), pytest.param(200, id="200", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_predicted_cost_equals_counted_cost(name: str, n_candidates: int) -> None:
    torch.manual_seed(0)
    in_channels, size, classes = (1, 8, 10) if name == "digitnet" else (3, 16, 10)
    model = build_model(name, in_channels=in_channels, image_size=size, num_classes=classes).eval()
    x = torch.randn(1, in_channels, size, size)
    config = load_space_config(model_family(name))
    space = build_search_space(model, x, grid=config.grid, never_prune=list(config.never_prune))
    dense = count(model, x)
    assert dense.unsupported == []
    assert space.dense == {"flops": dense.flops, "params": dense.params}

    rng = np.random.default_rng(0)
    candidates = rng.integers(0, space.n_levels, size=(n_candidates, space.n_groups))
    candidates[0] = space.sparsest_candidate()
    candidates[1] = space.uniform_candidate(space.n_levels // 2)
    predicted_flops = space.cost("flops", candidates)
    predicted_params = space.cost("params", candidates)
    for i, levels in enumerate(candidates):
        pruned, _ = materialize(model, space, levels, x, never_prune=list(config.never_prune))
        counted = count(pruned, x)
        assert (counted.flops, counted.params) == (predicted_flops[i], predicted_params[i]), f"candidate {i}"
        assert pruned(x).shape == (1, classes)
