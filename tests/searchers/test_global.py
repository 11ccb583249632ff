"""The ``global`` searcher: the global cut against a known optimum and a plain reference."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.searchers import make_searcher
from autoprune.searchers.base import Problem
from autoprune.searchers.global_ranking import IMPORTANCES
from autoprune.space.levels import LevelGrid
from autoprune.testing.searcher_suite import SIZES, SUITE_GRID, build_case
from autoprune.testing.synthetic import (
    SYNTHETIC_IMPORTANCES,
    chain_space,
    exact_optimum,
    make_problem,
    separable_quality,
    separable_space,
)

WIDTH = 8
#: every kept count of an 8-channel group is a level, so the cut is never snapped
EVERY_CHANNEL = LevelGrid(keep_ratios=tuple(k / WIDTH for k in range(WIDTH, 0, -1)))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_the_cut_is_optimal_when_scores_are_each_channels_loss_and_channels_cost_alike(ratio: float) -> None:
    """With equal prices per channel and each channel's score its marginal loss of quality
    (concave, so removal order within a group is by score), removing the lowest scores
    first is the exact knapsack optimum."""
    space = separable_space([WIDTH] * 4, EVERY_CHANNEL, flops_per_channel=1, params_per_channel=1)
    quality = separable_quality(space, [0.5, 1.0, 1.5, 3.0])
    f = lambda r: 1.0 - (1.0 - r) ** 2  # noqa: E731 (the synthetic quality's curve)
    losses = [np.array([w * (f(k / WIDTH) - f((k - 1) / WIDTH)) for k in range(1, WIDTH + 1)])
              for w in quality.weights]
    problem = make_problem(space, ratio)
    problem = Problem(space=space, constraints=problem.constraints, channel_scores=lambda kind: losses)
    (proposal,) = make_searcher("global", problem=problem, seed=0).ask(1)
    _, optimum = exact_optimum(problem, quality)
    assert float(quality(proposal.levels)) == pytest.approx(optimum)


def _reference(problem: Problem, scores: list[np.ndarray]) -> np.ndarray:
    """Remove channels one at a time, lowest score first, until the snapped candidate fits."""
    space = problem.space
    kept = np.array([g.kept for g in space.groups])
    remaining = [sorted(s.tolist()) for s in scores]
    counts = np.array([g.size for g in space.groups])

    def snapped() -> np.ndarray:
        return np.array([max(l for l in range(space.n_levels) if kept[g, l] >= counts[g])
                         for g in range(space.n_groups)])

    while not problem.feasible(snapped())[0]:
        options = [(remaining[g][0], g) for g in range(space.n_groups)
                   if remaining[g] and counts[g] > kept[g, -1]]
        _, g = min(options)
        remaining[g].pop(0)
        counts[g] -= 1
    return snapped()


@pytest.mark.parametrize("importance", IMPORTANCES)
@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.7])
def test_the_cut_matches_one_channel_at_a_time_on_coupled_costs(importance: str, ratio: float) -> None:
    problem = make_problem(chain_space(SIZES, SUITE_GRID), ratio)
    searcher = make_searcher("global", problem=problem, seed=0, options={"importance": importance})
    (proposal,) = searcher.ask(1)
    assert problem.feasible(proposal.levels)[0]
    assert proposal.levels.tolist() == _reference(problem, problem.channel_scores(importance)).tolist()
    fewer = searcher.removed - 1  # one removal less would not fit
    assert fewer < 0 or not problem.feasible(_snapped_after(problem, importance, fewer))[0]
    assert searcher.ask(1) == [] and searcher.finished


def _snapped_after(problem: Problem, importance: str, removed: int) -> np.ndarray:
    """The snapped candidate after the ``removed`` lowest-scored removable channels are gone."""
    kept = np.array([g.kept for g in problem.space.groups])
    scores = problem.channel_scores(importance)
    items = sorted((v, g) for g, s in enumerate(scores) for v in np.sort(s)[: problem.space.groups[g].size - kept[g, -1]])
    counts = np.array([g.size for g in problem.space.groups])
    for _, g in items[:removed]:
        counts[g] -= 1
    return np.array([max(l for l in range(problem.space.n_levels) if kept[g, l] >= counts[g])
                     for g in range(problem.space.n_groups)])


def test_the_ranking_prunes_groups_unevenly() -> None:
    problem = make_problem(separable_space(SIZES, SUITE_GRID), 0.4)
    (proposal,) = make_searcher("global", problem=problem, seed=0).ask(1)
    assert len(set(problem.space.kept_counts(proposal.levels) / np.array(SIZES))) > 1


def test_synthetic_scores_answer_the_same_criteria() -> None:
    assert SYNTHETIC_IMPORTANCES == IMPORTANCES


def test_unknown_importance_and_missing_scores_are_refused() -> None:
    problem = build_case("separable-flops0.4").problem
    with pytest.raises(UserError, match="importance must be one of magnitude, taylor, bn_scale"):
        make_searcher("global", problem=problem, seed=0, options={"importance": "hessian"})
    bare = Problem(space=problem.space, constraints=problem.constraints)
    with pytest.raises(UserError, match="importance scores, which this model does not have"):
        make_searcher("global", problem=bare, seed=0)
