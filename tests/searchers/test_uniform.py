"""``uniform``: one candidate, the least pruning uniform level that meets the budget."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.searchers import make_searcher
from autoprune.searchers.base import Problem
from autoprune.space.budget import Constraints
from autoprune.testing.searcher_suite import CASE_NAMES, SUITE_GRID, build_case
from autoprune.testing.synthetic import chain_space, make_problem


def _brute_force_level(problem: Problem) -> int | None:
    """The smallest level whose uniform candidate fits, by checking every level."""
    space = problem.space
    every = np.array([space.uniform_candidate(level) for level in range(space.n_levels)])
    fits = np.flatnonzero(problem.feasible(every))
    return int(fits[0]) if len(fits) else None


@pytest.mark.parametrize("name", CASE_NAMES)
def test_proposes_exactly_the_least_pruning_feasible_uniform_level(name: str) -> None:
    problem = build_case(name).problem
    searcher = make_searcher("uniform", problem=problem, seed=0)
    proposals = searcher.ask(8)
    assert len(proposals) == 1
    levels = proposals[0].levels
    assert np.all(levels == levels[0]), "uniform means the same level in every group"
    assert levels[0] == _brute_force_level(problem)
    assert searcher.finished
    assert searcher.ask(1) == []


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.99, 1.0])
def test_level_is_tight_on_a_sweep_of_budgets(ratio: float) -> None:
    problem = make_problem(chain_space([8, 16, 16, 32], SUITE_GRID), ratio)
    (proposal,) = make_searcher("uniform", problem=problem, seed=3).ask(1)
    level = int(proposal.levels[0])
    space = problem.space
    assert space.relative_cost("flops", proposal.levels) <= ratio
    if level > 0:  # one level denser everywhere is over budget
        assert space.relative_cost("flops", space.uniform_candidate(level - 1)) > ratio
    assert level == _brute_force_level(problem)


def test_whole_budget_gives_the_dense_model() -> None:
    problem = make_problem(chain_space([8, 16], SUITE_GRID), 1.0)
    (proposal,) = make_searcher("uniform", problem=problem, seed=0).ask(1)
    assert proposal.levels.tolist() == [0, 0]


def test_ignores_what_it_is_told_and_stays_finished() -> None:
    problem = build_case("separable-flops0.4").problem
    searcher = make_searcher("uniform", problem=problem, seed=0)
    searcher.ask(1)
    searcher.tell([])
    assert searcher.ask(4) == []


def test_unreachable_hand_built_limit_finishes_without_proposals() -> None:
    space = chain_space([8, 16], SUITE_GRID)
    below = float(space.cost("flops", space.sparsest_candidate())) - 1.0
    problem = Problem(space=space, constraints=Constraints(limits={"flops": below}))
    searcher = make_searcher("uniform", problem=problem, seed=0)
    assert searcher.ask(1) == []
    assert searcher.finished
