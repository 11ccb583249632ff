"""The DP allocator against brute force on small coupled instances."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.searchers.base import Problem
from autoprune.searchers.dp_solver import (
    CouplingTooWide,
    elimination_order,
    problem_costs,
    solve,
)
from autoprune.space.budget import Constraints
from autoprune.space.cost import QuadraticCost
from autoprune.space.levels import LevelGrid
from autoprune.space.search_space import Group, SearchSpace
from autoprune.testing.synthetic import (
    all_candidates,
    chain_latency_model,
    chain_space,
    make_problem,
    residual_space,
)

GRID = LevelGrid(keep_ratios=(1.0, 0.75, 0.5, 0.25))


def _distortion(space: SearchSpace, seed: int) -> np.ndarray:
    """Random increasing curves, 0 at the dense level."""
    rng = np.random.default_rng(seed)
    steps = rng.uniform(0.0, 1.0, size=(space.n_groups, space.n_levels))
    steps[:, 0] = 0.0
    return np.cumsum(steps, axis=1)


def _brute_force(problem: Problem, distortion: np.ndarray) -> float:
    candidates = all_candidates(problem.space)
    feasible = candidates[problem.feasible(candidates)]
    totals = distortion[np.arange(problem.space.n_groups), feasible].sum(axis=1)
    return float(totals.min())


def _exact(problem: Problem, distortion: np.ndarray, buckets: int = 10**6) -> tuple[np.ndarray, float]:
    solution = solve(distortion, problem_costs(problem), problem.constraints.limits, buckets=buckets)
    found = solution.allocate(problem.constraints.limits)
    assert found is not None
    return found


SPACES = {
    "chain4": lambda: chain_space([8, 12, 8, 4], GRID, positions=[4, 2, 2, 1]),
    "residual": lambda: residual_space([4, 8], GRID, blocks=2, positions=1),
    "residual3": lambda: residual_space([4, 4, 8], GRID, blocks=1, positions=1),
}


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("ratio", [0.2, 0.45, 0.8])
@pytest.mark.parametrize("seed", [0, 1])
def test_dp_equals_brute_force_on_coupled_flops(name: str, ratio: float, seed: int) -> None:
    problem = make_problem(SPACES[name](), ratio)
    distortion = _distortion(problem.space, seed)
    levels, value = _exact(problem, distortion)
    assert problem.feasible(levels)[0]
    assert value == pytest.approx(distortion[np.arange(len(levels)), levels].sum())
    assert value == pytest.approx(_brute_force(problem, distortion))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_equals_brute_force_with_flops_and_params(seed: int) -> None:
    problem = make_problem(residual_space([4, 8], GRID, blocks=1, positions=2), 0.5, params_ratio=0.4)
    distortion = _distortion(problem.space, seed)
    levels, value = _exact(problem, distortion, buckets=10**8)
    assert problem.feasible(levels)[0]
    assert value == pytest.approx(_brute_force(problem, distortion))


def test_one_solve_answers_every_lower_budget() -> None:
    problem = make_problem(SPACES["residual"](), 0.8)
    distortion = _distortion(problem.space, 3)
    solution = solve(distortion, problem_costs(problem), problem.constraints.limits, buckets=10**6)
    for fraction in (1.0, 0.7, 0.5, 0.3):
        limits = {r: v * fraction for r, v in problem.constraints.limits.items()}
        lower = Problem(space=problem.space, constraints=Constraints(limits=limits))
        found = solution.allocate(limits)
        if not lower.feasible(problem.space.sparsest_candidate())[0]:
            assert found is None
            continue
        assert found is not None
        assert lower.feasible(found[0])[0]
        assert found[1] == pytest.approx(_brute_force(lower, distortion))


def test_quadratic_costs_are_never_treated_as_independent() -> None:
    """Pricing each group alone (neighbours dense) would call this allocation far over budget
    or under it; the DP's tables must reproduce the cost model on every candidate."""
    problem = make_problem(SPACES["residual"](), 0.5)
    costs = problem_costs(problem)
    candidates = all_candidates(problem.space)[::37]
    for cost in costs:
        model = problem.space.costs[cost.name]
        kept = problem.space.kept_counts(candidates)
        assert [cost.total(c) for c in candidates] == pytest.approx(model(kept).astype(float))


def test_coarse_buckets_stay_feasible_within_the_documented_gap() -> None:
    """With few cells, increments round up: the plan is feasible, and no worse than the best
    plan that leaves one cell per group of the budget unused."""
    problem = make_problem(chain_space([16, 24, 16, 8], LevelGrid.from_step(step=1 / 8, min_ratio=1 / 8)), 0.4)
    distortion = _distortion(problem.space, 5)
    buckets = 50
    solution = solve(distortion, problem_costs(problem), problem.constraints.limits, buckets=buckets)
    levels, value = solution.allocate(problem.constraints.limits)
    assert problem.feasible(levels)[0]
    exact = _brute_force(problem, distortion)
    assert value >= exact - 1e-9
    cost = problem_costs(problem)[0].normalised()
    cell = (cost.units_limit(problem.constraints.limits["flops"]) - cost.constant) / buckets
    tighter = {"flops": problem.constraints.limits["flops"] - problem.space.n_groups * cell}
    assert value <= _brute_force(Problem(space=problem.space, constraints=Constraints(limits=tighter)),
                                 distortion) + 1e-9


def test_latency_tables_are_coupled_too() -> None:
    space = chain_space([8, 8, 8], GRID)
    model = chain_latency_model(space)
    dense = float(model.predict(np.zeros(space.n_groups, dtype=np.int64))[0])
    problem = Problem(space=space, constraints=Constraints(limits={"latency": 0.4 * dense}, latency_model=model))
    distortion = _distortion(space, 1)
    solution = solve(distortion, problem_costs(problem), problem.constraints.limits, buckets=20000)
    levels, value = solution.allocate(problem.constraints.limits)
    assert problem.feasible(levels)[0]
    assert value == pytest.approx(_brute_force(problem, distortion), abs=0.05)


def test_barred_levels_are_never_chosen() -> None:
    problem = make_problem(SPACES["chain4"](), 0.45)
    distortion = _distortion(problem.space, 0)
    distortion[1, 3] = distortion[2, 2] = np.inf
    levels, value = _exact(problem, distortion)
    assert levels[1] != 3 and levels[2] != 2
    assert value == pytest.approx(_brute_force(problem, distortion))


def test_elimination_order_keeps_chains_and_stages_narrow() -> None:
    chain = {(i, i + 1) for i in range(9)}
    assert elimination_order(10, chain)[1] == 2  # the frontier group and the one being added
    space = residual_space([4, 4, 4], GRID, blocks=3)
    edges = {(g, h) for g in range(space.n_groups) for h in range(g + 1, space.n_groups)
             if space.costs["flops"].quadratic[g, h] or space.costs["flops"].quadratic[h, g]}
    assert elimination_order(space.n_groups, edges)[1] <= 3


def test_a_coupling_too_wide_is_refused() -> None:
    n = 12
    groups = [Group(name=f"g{i}", size=16, kept=LevelGrid.from_step(step=1 / 16, min_ratio=1 / 16).kept(16))
              for i in range(n)]
    quadratic = np.ones((n, n), dtype=np.int64)  # every group pair shares a layer
    cost = QuadraticCost(n_groups=n, quadratic=quadratic)
    space = SearchSpace(groups=groups, grid=LevelGrid.from_step(step=1 / 16, min_ratio=1 / 16), flops=cost,
                        params=QuadraticCost(n_groups=n, linear=np.ones(n, dtype=np.int64)))
    problem = make_problem(space, 0.5)
    with pytest.raises(CouplingTooWide, match="coupling"):
        solve(np.zeros((n, space.n_levels)), problem_costs(problem), problem.constraints.limits)


def test_a_wide_state_gets_fewer_cost_cells_and_stays_feasible(monkeypatch, caplog) -> None:
    import autoprune.searchers.dp_solver as solver

    problem = make_problem(residual_space([8, 8], LevelGrid.from_step(step=1 / 8, min_ratio=1 / 8), blocks=1), 0.3)
    distortion = _distortion(problem.space, 4)
    width = solver.elimination_order(problem.space.n_groups, set(problem_costs(problem)[0].pairs))[1]
    monkeypatch.setattr(solver, "MAX_STATE_CELLS", problem.space.n_levels ** width * 41)
    with caplog.at_level("WARNING"):
        solution = solve(distortion, problem_costs(problem), problem.constraints.limits, buckets=2000)
    assert "40 cost cells per resource instead of 2000" in caplog.text
    levels, value = solution.allocate(problem.constraints.limits)
    assert problem.feasible(levels)[0] and value >= _brute_force(problem, distortion) - 1e-9
