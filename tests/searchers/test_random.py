"""``random``: feasible random allocations that use the budget; ``repair`` and ``fill``."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.searchers import make_searcher
from autoprune.searchers.base import Problem
from autoprune.searchers.repair import fill, repair
from autoprune.testing.searcher_suite import (
    CASE_NAMES,
    ROUNDED_GRID,
    SUITE_GRID,
    at_sparsest_problem,
    build_case,
)
from autoprune.testing.synthetic import chain_space, make_problem, separable_space

#: cases whose budget random search can reach today (see the plateau tests below)
REACHABLE = [n for n in CASE_NAMES if not n.startswith("rounded")]


def _some_denser_step_fits(problem: Problem, levels: np.ndarray) -> bool:
    """Whether lowering one group's level by one still meets the budget (budget left unused)."""
    for g in np.flatnonzero(levels > 0):
        denser = levels.copy()
        denser[g] -= 1
        if problem.feasible(denser)[0]:
            return True
    return False


@pytest.mark.parametrize("name", REACHABLE)
def test_proposals_are_feasible_and_use_the_budget(name: str) -> None:
    problem = build_case(name).problem
    searcher = make_searcher("random", problem=problem, seed=0)
    for _ in range(2):
        for proposal in searcher.ask(8):
            assert problem.feasible(proposal.levels)[0]
            assert not _some_denser_step_fits(problem, proposal.levels), proposal.levels.tolist()
        searcher.tell([])


def test_without_fill_proposals_are_feasible_and_recorded() -> None:
    problem = build_case("separable-flops0.4").problem
    searcher = make_searcher("random", problem=problem, seed=0, options={"use_budget": False})
    proposals = searcher.ask(8)
    assert all(problem.feasible(p.levels)[0] for p in proposals)
    assert searcher.options()["use_budget"] is False
    assert any(_some_denser_step_fits(problem, p.levels) for p in proposals), "nothing filled, budget left over"


def test_candidates_differ_across_asks_and_seeds() -> None:
    problem = build_case("separable-flops0.4").problem
    searcher = make_searcher("random", problem=problem, seed=0)
    first = [tuple(p.levels.tolist()) for p in searcher.ask(8)]
    second = [tuple(p.levels.tolist()) for p in searcher.ask(8)]
    assert len(set(first + second)) >= 14, "random proposals should rarely repeat in a space of 32768"
    assert first != second
    other = [tuple(p.levels.tolist()) for p in make_searcher("random", problem=problem, seed=1).ask(8)]
    assert other != first


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", REACHABLE)
def test_repair_reaches_the_budget_by_only_pruning_more(name: str) -> None:
    problem = build_case(name).problem
    space = problem.space
    rng = np.random.default_rng(11)
    starts = np.vstack([space.dense_candidate(), rng.integers(0, space.n_levels, size=(20, space.n_groups))])
    for start in starts:
        repaired = repair(problem, start, rng)
        assert problem.feasible(repaired)[0]
        assert np.all(repaired >= start) and np.all(repaired < space.n_levels)


def test_repair_leaves_feasible_candidates_alone_and_is_seeded() -> None:
    problem = build_case("chain-flops0.4-params0.3").problem
    sparsest = problem.space.sparsest_candidate()
    assert repair(problem, sparsest, np.random.default_rng(0)).tolist() == sparsest.tolist()
    dense = problem.space.dense_candidate()
    runs = [repair(problem, dense, np.random.default_rng(5)).tolist() for _ in range(2)]
    assert runs[0] == runs[1]


def test_repair_honours_a_params_limit_that_binds_alone() -> None:
    space = separable_space([16, 32, 24], SUITE_GRID, flops_per_channel=[1, 1, 1], params_per_channel=[1, 9, 1])
    problem = make_problem(space, 1.0, params_ratio=0.3)
    repaired = repair(problem, space.dense_candidate(), np.random.default_rng(0))
    assert space.relative_cost("params", repaired) <= 0.3


@pytest.mark.parametrize("name", REACHABLE)
def test_fill_gives_back_until_no_single_step_fits(name: str) -> None:
    problem = build_case(name).problem
    rng = np.random.default_rng(3)
    start = problem.space.sparsest_candidate()
    filled = fill(problem, start, rng)
    assert problem.feasible(filled)[0]
    assert np.all(filled <= start)
    assert not _some_denser_step_fits(problem, filled)
    assert fill(problem, filled, rng).tolist() == filled.tolist()


def test_repair_crosses_kept_count_plateaus() -> None:
    space = chain_space([16, 24, 40], ROUNDED_GRID)  # group 0 keeps 12 channels at levels 3, 4 and 5
    problem = at_sparsest_problem(space)
    repaired = repair(problem, np.array([3, 15, 15]), np.random.default_rng(0))
    assert problem.feasible(repaired)[0]


def test_random_search_at_the_least_budget_on_a_rounded_grid() -> None:
    problem = at_sparsest_problem(chain_space([16, 24, 40], ROUNDED_GRID))
    searcher = make_searcher("random", problem=problem, seed=0)
    assert all(problem.feasible(p.levels)[0] for p in searcher.ask(8))
