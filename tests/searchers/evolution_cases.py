"""Shared problems and helpers for the ``darwin`` and ``tyr`` tests (not a test module).

The suite's separable problems (5 groups, 8 levels) are too small to tell a search from
an enumeration; :func:`hard_case` has 12 groups of 16 to 128 channels on the default
16-level grid (16**12 candidates), whose exact optimum the knapsack table still finds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoprune.searchers.base import Problem, Proposal, Searcher
from autoprune.space.levels import LevelGrid
from autoprune.testing.driver import Transcript
from autoprune.testing.searcher_suite import SyntheticCase
from autoprune.testing.synthetic import exact_optimum, make_problem, separable_quality, separable_space

#: the grid of ``search_spaces/default.yaml`` (level_step 0.0625)
DEFAULT_GRID = LevelGrid.from_step(step=0.0625, min_ratio=0.0625)
HARD_SIZES = (16, 32, 24, 64, 48, 40, 96, 56, 80, 72, 128, 112)
HARD_BUDGETS = (0.2, 0.4, 0.6)


def hard_case(budget: float, grid: LevelGrid = DEFAULT_GRID) -> SyntheticCase:
    space = separable_space(HARD_SIZES, grid)
    quality = separable_quality(space, np.random.default_rng(7).uniform(0.5, 2.0, size=len(HARD_SIZES)))
    return SyntheticCase(name=f"hard-flops{budget}", problem=make_problem(space, budget), quality=quality)


def evaluations_to_optimum(transcript: Transcript, case: SyntheticCase, tolerance: float = 0.01) -> int | None:
    """How many evaluations it took until one was within ``tolerance`` of the optimum."""
    _, optimum = exact_optimum(case.problem, case.quality)
    for i, result in enumerate(transcript.results):
        if result.ok and result.metrics["accuracy"] * case.quality.dense_value >= (1 - tolerance) * optimum:
            return i + 1
    return None


def key(proposal: Proposal) -> tuple[object, ...]:
    """Everything that makes a proposal a distinct trial, as plain values."""
    return (tuple(int(v) for v in proposal.levels), proposal.fidelity, proposal.eval_samples, proposal.parent,
            proposal.draw)


def replay_then_ask(make: Callable[[Problem, int], Searcher], case: SyntheticCase, transcript: Transcript,
                    batches: int, seed: int) -> list[tuple[object, ...]]:
    """A fresh searcher told the first ``batches`` batches of ``transcript`` (asking the
    same sizes, as a resumed run does), then asked for the next batch of the same size."""
    searcher = make(case.problem, seed)
    done = 0
    for batch in transcript.batches[:batches]:
        proposals = searcher.ask(len(batch))
        assert [key(p) for p in proposals] == [key(p) for p in batch], "replay diverged"
        searcher.tell(transcript.results[done : done + len(batch)])
        done += len(batch)
    return [key(p) for p in searcher.ask(len(transcript.batches[batches]))]
