"""The synthetic spaces, objective and optimum finders the searcher tests trust."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import autoprune.testing.driver as driver_module
import autoprune.testing.synthetic as synthetic_module
from autoprune.errors import UserError
from autoprune.searchers import make_searcher
from autoprune.searchers.base import Problem, Proposal
from autoprune.space.budget import Constraints
from autoprune.space.levels import LevelGrid
from autoprune.space.search_space import SearchSpace
from autoprune.testing.driver import drive, evaluate
from autoprune.testing.synthetic import (
    SeparableQuality,
    all_candidates,
    chain_space,
    exact_optimum,
    greedy_allocation,
    make_problem,
    separable_quality,
    separable_space,
)

GRID = LevelGrid(keep_ratios=(1.0, 0.75, 0.5, 0.25))
FINE = LevelGrid.from_step(step=0.0625, min_ratio=0.0625)


def test_chain_costs_are_the_products_of_neighbouring_kept_counts() -> None:
    sizes, positions = [8, 16, 12], [100, 25, 9]
    space = chain_space(sizes, GRID, in_channels=3, positions=positions, n_classes=10)
    for levels in np.random.default_rng(0).integers(0, 4, size=(30, 3)):
        k = space.kept_counts(levels)
        inputs = [3, k[0], k[1]]
        flops = sum(inputs[i] * k[i] * positions[i] for i in range(3)) + k[2] * 10
        params = sum(inputs[i] * k[i] + k[i] for i in range(3)) + k[2] * 10 + 10
        assert (space.cost("flops", levels), space.cost("params", levels)) == (flops, params)


def test_separable_costs_are_linear_in_the_kept_counts() -> None:
    space = separable_space([8, 16, 12], GRID, flops_per_channel=[5, 1, 2], params_per_channel=3,
                            constant_flops=7, constant_params=2)
    assert not space.costs["flops"].quadratic.any() and not space.costs["params"].quadratic.any()
    for levels in np.random.default_rng(1).integers(0, 4, size=(30, 3)):
        k = space.kept_counts(levels)
        assert space.cost("flops", levels) == 7 + 5 * k[0] + k[1] + 2 * k[2]
        assert space.cost("params", levels) == 2 + 3 * k.sum()


@pytest.mark.parametrize("builder", [chain_space, separable_space])
def test_spaces_survive_a_json_round_trip(builder: Callable[..., SearchSpace]) -> None:
    space = builder([8, 16, 12], GRID)
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    levels = all_candidates(space)
    assert np.array_equal(again.cost("flops", levels), space.cost("flops", levels))
    assert again.dense == space.dense


@pytest.mark.parametrize("kwargs", [{"sizes": []}, {"sizes": [8, 0]}, {"sizes": [8, 16], "positions": [1, 2, 3]}])
def test_bad_space_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        chain_space(grid=GRID, **kwargs)


def test_quality_is_dense_at_level_zero_increasing_and_concave() -> None:
    space = separable_space([8, 16, 12], FINE)
    quality = separable_quality(space, [1.0, 2.0, 0.5])
    assert quality(space.dense_candidate()) == pytest.approx(3.5)
    assert quality.accuracy(space.dense_candidate()) == pytest.approx(1.0)
    kept = np.array([g.kept for g in space.groups], dtype=float)
    gain = -np.diff(quality.table, axis=1)  # value of giving back each level, sparse end last
    channels = -np.diff(kept, axis=1)
    assert np.all(gain >= 0)
    per_channel = np.where(channels > 0, gain / np.where(channels > 0, channels, 1), np.nan)
    for row in per_channel:  # denser levels are worth less per channel
        row = row[~np.isnan(row)]
        assert np.all(np.diff(row) >= -1e-12)


@pytest.mark.parametrize("weights", [[1.0, 2.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, np.nan, 1.0]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        separable_quality(separable_space([8, 16, 12], GRID), weights)


def _brute_force(problem: Problem, quality: SeparableQuality) -> float:
    every = all_candidates(problem.space)
    return float(quality(every[problem.feasible(every)]).max())


@pytest.mark.parametrize("ratio", [0.3, 0.45, 0.6, 0.8, 1.0])
@pytest.mark.parametrize("constant", [0, 5])
def test_exact_optimum_matches_brute_force(ratio: float, constant: int) -> None:
    space = separable_space([8, 16, 12, 20], GRID, flops_per_channel=[3, 1, 4, 2], constant_flops=constant)
    quality = separable_quality(space, [2.0, 0.7, 1.3, 1.0])
    problem = make_problem(space, ratio)
    levels, value = exact_optimum(problem, quality)
    assert problem.feasible(levels)[0]
    assert value == pytest.approx(float(quality(levels)))
    assert value == pytest.approx(_brute_force(problem, quality))


def test_exact_optimum_works_on_a_params_budget() -> None:
    space = separable_space([8, 16, 12], GRID, params_per_channel=[1, 5, 2])
    quality = separable_quality(space, [1.0, 1.0, 1.0])
    problem = Problem(space=space, constraints=Constraints(limits={"params": 0.5 * space.dense["params"]}))
    assert exact_optimum(problem, quality)[1] == pytest.approx(_brute_force(problem, quality))


def test_exact_optimum_refuses_what_it_cannot_solve() -> None:
    chain = chain_space([8, 16], GRID)
    with pytest.raises(ValueError, match="linear"):
        exact_optimum(make_problem(chain, 0.5), separable_quality(chain, [1.0, 1.0]))
    space = separable_space([8, 16], GRID)
    with pytest.raises(ValueError, match="exactly one"):
        exact_optimum(make_problem(space, 0.5, params_ratio=0.5), separable_quality(space, [1.0, 1.0]))


@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.5, 0.7])
def test_greedy_is_feasible_filled_and_within_one_percent_on_a_fine_grid(ratio: float) -> None:
    space = separable_space([16, 32, 24, 64, 48, 40], FINE)
    quality = separable_quality(space, np.random.default_rng(0).uniform(0.5, 2.0, size=6))
    problem = make_problem(space, ratio)
    greedy = greedy_allocation(problem, quality)
    _, optimum = exact_optimum(problem, quality)
    assert problem.feasible(greedy)[0]
    assert optimum * 0.99 <= quality(greedy) <= optimum + 1e-9
    for g in np.flatnonzero(greedy > 0):
        denser = greedy.copy()
        denser[g] -= 1
        assert not problem.feasible(denser)[0]


def test_make_problem_resolves_relative_limits_and_refuses_unreachable_ones() -> None:
    space = chain_space([8, 16, 12], GRID)
    problem = make_problem(space, 0.4, params_ratio=0.5)
    assert problem.constraints.limits == pytest.approx({"flops": 0.4 * space.dense["flops"],
                                                        "params": 0.5 * space.dense["params"]})
    with pytest.raises(UserError, match="unreachable"):
        make_problem(space, 0.001)


def test_all_candidates_enumerates_each_once_and_refuses_large_spaces() -> None:
    every = all_candidates(separable_space([8, 16, 12], GRID))
    assert every.shape == (64, 3) and len({tuple(r) for r in every.tolist()}) == 64
    with pytest.raises(ValueError, match="brute force"):
        all_candidates(separable_space([8] * 12, GRID))


def test_driver_fails_trials_deterministically_and_respects_the_bound() -> None:
    space = separable_space([8, 16, 12], GRID)
    quality = separable_quality(space, [1.0, 1.0, 1.0])
    proposals = [Proposal(levels=space.dense_candidate()) for _ in range(6)]
    results = evaluate(proposals, quality, first_trial_id=0, fail_every=3)
    assert [r.status for r in results] == ["ok", "ok", "failed"] * 2
    assert all(r.metrics == {} for r in results if not r.ok)
    assert results[0].metrics["accuracy"] == pytest.approx(1.0) and results[0].fidelity == 100
    transcript = drive(make_searcher("random", problem=make_problem(space, 0.5), seed=0), quality, max_proposals=11)
    assert len(transcript.proposals) == 11 and not transcript.finished


@pytest.mark.parametrize("module", [synthetic_module, driver_module])
def test_helpers_import_no_torch(module: ModuleType) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "torch" not in {name.split(".")[0] for name in names}
