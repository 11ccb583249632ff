"""Level swaps: budget kept, budget used, groups drawn in proportion to cost, plateaus skipped."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.searchers.base import Problem
from autoprune.searchers.mutation import GridSteps, fill_steps, mutate, number_of_swaps, single_moves, swap
from autoprune.searchers.repair import repair
from autoprune.space.budget import Constraints
from autoprune.testing.searcher_suite import ROUNDED_GRID, SUITE_GRID, at_sparsest_problem, build_case
from autoprune.testing.synthetic import chain_space, make_problem, separable_space

from evolution_cases import DEFAULT_GRID

CASES = ["chain-flops0.1", "chain-flops0.4-params0.3", "separable-flops0.4", "separable-flops0.7"]


def _reference_steps(kept: np.ndarray, level: int) -> tuple[int, int]:
    """Step targets by their definition: the first level of the next distinct count each way."""
    count = kept[level]
    sparser = [j for j in range(level + 1, len(kept)) if kept[j] < count]
    denser_counts = [c for c in kept if c > count]
    up = sparser[0] if sparser else -1
    down = int(np.flatnonzero(kept == min(denser_counts))[0]) if denser_counts else -1
    return up, down


@pytest.mark.parametrize("grid", [SUITE_GRID, ROUNDED_GRID, DEFAULT_GRID])
def test_grid_steps_lead_to_the_next_distinct_kept_count(grid) -> None:  # noqa: ANN001
    space = chain_space([16, 24, 40, 6], grid)
    steps = GridSteps(space)
    for level in range(space.n_levels):
        up, down = steps(space.uniform_candidate(level))
        for g, group in enumerate(space.groups):
            assert (up[g], down[g]) == _reference_steps(np.array(group.kept), level), (g, level)


def test_grid_steps_skip_a_plateau() -> None:
    space = chain_space([16, 24, 40], ROUNDED_GRID)  # group 0 keeps 12 channels at levels 3, 4 and 5
    assert space.groups[0].kept[3:6] == (12, 12, 12)
    up, down = GridSteps(space)(np.array([4, 4, 4]))
    assert up[0] == 6 and down[0] == 2


def _feasible_parents(problem: Problem, n: int, seed: int) -> list[np.ndarray]:
    """Random candidates moved onto the budget and filled, as a search's parents are."""
    rng = np.random.default_rng(seed)
    steps = GridSteps(problem.space)
    starts = rng.integers(0, problem.space.n_levels, size=(n, problem.space.n_groups))
    return [fill_steps(problem, repair(problem, s, rng), steps, rng) for s in starts]


@pytest.mark.parametrize("name", CASES)
def test_a_swap_moves_one_group_up_and_another_down_within_budget(name: str) -> None:
    problem = build_case(name).problem
    steps = GridSteps(problem.space)
    rng = np.random.default_rng(1)
    swapped = 0
    for parent in _feasible_parents(problem, 30, seed=2):
        child = swap(problem, parent, steps, rng)
        if child is None:
            continue
        swapped += 1
        assert problem.feasible(child)[0], "a swap must never leave the budget"
        changed = np.flatnonzero(child != parent)
        assert len(changed) == 2
        up, down = steps(parent)
        raised = [g for g in changed if child[g] == up[g]]
        lowered = [g for g in changed if child[g] == down[g]]
        assert len(raised) == 1 and len(lowered) == 1 and raised != lowered
    assert swapped >= 20


@pytest.mark.parametrize("name", CASES)
def test_a_child_is_within_budget_and_uses_nearly_all_of_it(name: str) -> None:
    problem = build_case(name).problem
    steps = GridSteps(problem.space)
    rng = np.random.default_rng(4)
    for parent in _feasible_parents(problem, 20, seed=5):
        for _ in range(5):
            child = mutate(problem, parent, steps, rng, max_swaps=3)
            if child is None:
                continue
            assert problem.feasible(child)[0]
            _, down = steps(child)
            assert not single_moves(problem, child, down).fits.any(), "budget left for one more step"


def test_groups_are_drawn_in_proportion_to_the_cost_a_step_moves() -> None:
    """Equal groups priced 1 to 4 per channel: the group pruned more is drawn with
    probability price/10, the group given back price/(10 - price of the first)."""
    prices = np.array([1, 2, 3, 4])
    space = separable_space([32] * 4, DEFAULT_GRID, flops_per_channel=prices.tolist())
    problem = make_problem(space, 1.0)  # every move fits: only the weights decide
    parent = space.uniform_candidate(8)
    steps = GridSteps(space)
    rng = np.random.default_rng(0)
    n = 2500
    raised, lowered = np.zeros(4), np.zeros(4)
    for _ in range(n):
        child = swap(problem, parent, steps, rng)
        raised[np.flatnonzero(child > parent)] += 1
        lowered[np.flatnonzero(child < parent)] += 1
    p_up = prices / prices.sum()
    p_down = np.array([sum(p_up[a] * prices[b] / (prices.sum() - prices[a]) for a in range(4) if a != b)
                       for b in range(4)])
    assert raised / n == pytest.approx(p_up, abs=0.03)
    assert lowered / n == pytest.approx(p_down, abs=0.03)


def test_only_partners_that_fit_are_drawn() -> None:
    """At an exact budget, pruning a cheap group frees too little to give back an expensive one."""
    space = separable_space([32, 32], DEFAULT_GRID, flops_per_channel=[1, 4])
    parent = np.array([8, 8])
    problem = Problem(space=space, constraints=Constraints(limits={"flops": float(space.cost("flops", parent))}))
    steps = GridSteps(space)
    rng = np.random.default_rng(0)
    for _ in range(200):
        child = swap(problem, parent, steps, rng)
        assert child is not None and child.tolist() == [7, 9], "only pruning the dear group pays for the cheap one"


def test_no_swap_at_the_sparsest_budget() -> None:
    problem = at_sparsest_problem(chain_space([16, 24, 40], ROUNDED_GRID))
    sparsest = problem.space.sparsest_candidate()
    rng = np.random.default_rng(0)
    assert swap(problem, sparsest, GridSteps(problem.space), rng) is None
    assert mutate(problem, sparsest, GridSteps(problem.space), rng, max_swaps=3) is None


@pytest.mark.parametrize("max_swaps", [3, 4])
def test_number_of_swaps_is_the_minimum_of_two_uniform_draws(max_swaps: int) -> None:
    rng = np.random.default_rng(0)
    draws = np.array([number_of_swaps(rng, max_swaps) for _ in range(20000)])
    m = max_swaps
    expected = [((m - k + 1) ** 2 - (m - k) ** 2) / m**2 for k in range(1, m + 1)]  # 5/9, 3/9, 1/9 for 3
    assert np.bincount(draws, minlength=m + 1)[1:] / len(draws) == pytest.approx(expected, abs=0.01)
