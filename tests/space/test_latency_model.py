"""The latency model's arithmetic (pure numpy) and latency budgets resolved through it."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.space.budget import parse_budgets, resolve
from autoprune.space.latency_model import LatencyModel, LayerTable
from autoprune.space.levels import LevelGrid
from autoprune.testing.synthetic import chain_space


@pytest.fixture()
def space():
    return chain_space([8, 8], LevelGrid.from_step(step=0.25, min_ratio=0.25))


def toy_model(space) -> LatencyModel:
    """Layer 0 depends on group 0's level only, layer 1 on both groups."""
    n = space.n_levels
    first = LayerTable(name="conv0", in_group=-1, out_group=0, table=np.arange(n, 0, -1, dtype=float)[None, :])
    second = LayerTable(name="conv1", in_group=0, out_group=1,
                        table=np.add.outer(np.arange(n, 0, -1), np.arange(n, 0, -1)).astype(float))
    return LatencyModel(layers=[first, second], scale=2.0, offset=0.5)


def test_predict_sums_the_tables_affinely(space) -> None:
    model = toy_model(space)
    n = space.n_levels
    levels = np.array([[0, 0], [1, 2], [n - 1, n - 1]])
    sums = []
    for a, b in levels:
        sums.append((n - a) + ((n - a) + (n - b)))
    np.testing.assert_allclose(model.layer_sum(levels), sums)
    np.testing.assert_allclose(model.predict(levels), 2.0 * np.array(sums) + 0.5)
    assert model.predict(np.array([0, 0])).shape == (1,)


def test_round_trip_through_a_dict(space) -> None:
    model = toy_model(space)
    model.context["device"] = "cpu"
    again = LatencyModel.from_dict(model.to_dict())
    levels = np.array([[0, 1], [2, 3]])
    np.testing.assert_allclose(again.predict(levels), model.predict(levels))
    assert again.context == {"device": "cpu"}


def test_relative_latency_budget_is_relative_to_the_predicted_dense(space) -> None:
    model = toy_model(space)
    dense = float(model.predict(space.dense_candidate())[0])
    constraints = resolve(parse_budgets(["latency=0.7"]), space, model)
    assert constraints.limits["latency"] == pytest.approx(0.7 * dense)
    levels = np.array([[0, 0], [space.n_levels - 1, space.n_levels - 1]])
    used = constraints.usage(space, levels)["latency"]
    np.testing.assert_allclose(used, model.predict(levels))
    assert list(constraints.feasible(space, levels)) == [False, True]


def test_absolute_latency_budget_and_unreachable_message(space) -> None:
    model = toy_model(space)
    sparsest = float(model.predict(space.sparsest_candidate())[0])
    assert resolve(parse_budgets([f"latency={sparsest + 0.01}ms"]), space, model).limits["latency"] == \
        pytest.approx(sparsest + 0.01)
    with pytest.raises(UserError, match=r"latency=0\.1 is unreachable.*ask for at least latency="):
        resolve(parse_budgets(["latency=0.1"]), space, model)


def test_latency_budget_without_a_model_is_a_programming_error(space) -> None:
    with pytest.raises(ValueError, match="latency model"):
        resolve(parse_budgets(["latency=0.5"]), space)
