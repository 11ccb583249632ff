"""Per-channel importance with Torch-Pruning's classes, on the digits model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from autoprune.data import load_data
from autoprune.models import build_model
from autoprune.searchers.global_ranking import IMPORTANCES
from autoprune.space.analysis import build_search_space
from autoprune.space.channel_scores import CRITERIA, channel_scores, channel_scores_provider
from autoprune.space.config import load_space_config


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = load_data("digits")
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    space = build_search_space(model, data.example_input(1), grid=load_space_config("digitnet").grid, never_prune=[])
    return model, data, space


def test_the_searchers_criteria_are_torch_prunings() -> None:
    assert tuple(CRITERIA) == IMPORTANCES


@pytest.mark.parametrize("kind", IMPORTANCES)
def test_one_mean_normalised_score_per_channel_and_the_model_untouched(setup, kind: str) -> None:
    model, data, space = setup
    before = copy.deepcopy(model.state_dict())
    scores = channel_scores(model, data, space, never_prune=[], kind=kind)
    assert [len(s) for s in scores] == [g.size for g in space.groups]
    for s in scores:
        assert np.isfinite(s).all() and (s >= 0).all()
        assert s.mean() == pytest.approx(1.0, rel=1e-5)  # Torch-Pruning's normalizer="mean"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in model.parameters())


def test_bn_scale_is_the_batchnorm_weight_and_taylor_differs_from_magnitude(setup) -> None:
    model, data, space = setup
    bn_scores = channel_scores(model, data, space, never_prune=[], kind="bn_scale")
    inner = space.group_names.index("stages.0.0.conv1")  # its group has one BatchNorm, bn1
    gamma = model.stages[0][0].bn1.weight.detach().abs().double().numpy()
    assert np.allclose(bn_scores[inner], gamma / gamma.mean())
    magnitude = channel_scores(model, data, space, never_prune=[], kind="magnitude")
    taylor = channel_scores(model, data, space, never_prune=[], kind="taylor")
    assert not np.allclose(np.concatenate(magnitude), np.concatenate(taylor))


def test_the_provider_computes_each_criterion_once(setup, monkeypatch) -> None:
    model, data, space = setup
    provider = channel_scores_provider(model, data, space, never_prune=[])
    first = provider("magnitude")
    first[0][:] = -1.0  # a caller's change does not leak into the cache
    import autoprune.space.channel_scores as module

    monkeypatch.setattr(module, "channel_scores", lambda *a, **k: pytest.fail("computed twice"))
    assert (provider("magnitude")[0] >= 0).all()
