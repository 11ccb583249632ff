"""The conformance suite every searcher passes, shipped in the package like ``optuna/testing``.

Subclass :class:`SearcherTestCase` in a test module under a ``Test`` name and set
``searcher_name`` (or override :meth:`SearcherTestCase.make_searcher`)::

    class TestEvolution(SearcherTestCase):
        searcher_name = "evolution"
        optimality_tolerance = 0.01   # within 1% of the exact optimum on separable problems

The base class has no ``Test`` prefix, so pytest collects only its subclasses. Every test
runs the searcher through :func:`autoprune.testing.driver.drive` on the synthetic
problems of :mod:`autoprune.testing.synthetic` (each divided into three stages in group
order, ``Problem.stages``, for searchers that divide the network), checking what the run
loop relies on:
proposals inside the grid and the budget, determinism given seed and told results, the
``ask`` contract, tolerance of failed trials, bounded runs and serialisable options.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pytest

from autoprune.searchers import make_searcher
from autoprune.searchers.base import KINDS, TRIAL, Problem, Proposal, Searcher
from autoprune.space.budget import Constraints
from autoprune.space.levels import LevelGrid
from autoprune.space.search_space import SearchSpace
from autoprune.testing.driver import Transcript, drive
from autoprune.testing.synthetic import (
    SeparableQuality,
    chain_space,
    even_stages,
    exact_optimum,
    make_problem,
    separable_quality,
    separable_space,
    synthetic_channel_scores,
)

#: fine enough that 10% of the FLOPs is reachable in both synthetic spaces
SUITE_GRID = LevelGrid(keep_ratios=(1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1, 0.05))
#: the grid of the mobilenetv2 defaults: rounding to 2 channels makes kept-count plateaus
ROUNDED_GRID = LevelGrid.from_step(step=0.0625, min_ratio=0.0625, min_channels=4, round_to=2)
SIZES = (16, 32, 24, 64, 48)


@dataclass(frozen=True)
class SyntheticCase:
    """One problem of the suite with its known objective."""

    name: str
    problem: Problem
    quality: SeparableQuality


def _weights(n_groups: int) -> np.ndarray:
    """Fixed, unequal group importances, so allocations differ in quality."""
    return np.random.default_rng(2024).uniform(0.5, 2.0, size=n_groups)


def at_sparsest_problem(space: SearchSpace) -> Problem:
    """FLOPs bounded at exactly the sparsest model's, the least budget a user may ask for."""
    limit = float(space.cost("flops", space.sparsest_candidate()))
    return Problem(space=space, constraints=Constraints(limits={"flops": limit}),
                   channel_scores=synthetic_channel_scores(space))


_BUILDERS: dict[str, Callable[[], Problem]] = {
    "chain-flops0.1": lambda: make_problem(chain_space(SIZES, SUITE_GRID), 0.1),
    "chain-flops0.7": lambda: make_problem(chain_space(SIZES, SUITE_GRID), 0.7),
    "chain-flops0.4-params0.3": lambda: make_problem(chain_space(SIZES, SUITE_GRID), 0.4, params_ratio=0.3),
    "separable-flops0.1": lambda: make_problem(separable_space(SIZES, SUITE_GRID), 0.1),
    "separable-flops0.4": lambda: make_problem(separable_space(SIZES, SUITE_GRID), 0.4),
    "separable-flops0.7": lambda: make_problem(separable_space(SIZES, SUITE_GRID), 0.7),
    "rounded-chain-at-sparsest": lambda: at_sparsest_problem(chain_space((16, 24, 40), ROUNDED_GRID)),
}
#: every problem the suite runs on, by name (the pytest ids)
CASE_NAMES = tuple(_BUILDERS)


def build_case(name: str) -> SyntheticCase:
    """A fresh problem and objective, so no test sees state another left behind."""
    built = _BUILDERS[name]()
    # three stages in group order, for searchers that divide the network (emo-pms)
    problem = dataclasses.replace(built, stages=lambda: even_stages(built.space, min(3, built.space.n_groups)))
    quality = separable_quality(problem.space, _weights(problem.space.n_groups))
    return SyntheticCase(name=name, problem=problem, quality=quality)


def check_proposal(problem: Problem, proposal: Proposal) -> None:
    """Fail unless ``proposal`` is one in-grid candidate within every limit, checked afresh
    (a measurement, a searcher's probe, is exempt from the limits, not from the grid)."""
    space = problem.space
    assert isinstance(proposal, Proposal), f"ask must return Proposals, got {type(proposal).__name__}"
    levels = np.asarray(proposal.levels)
    assert levels.shape == (space.n_groups,), f"levels must have shape ({space.n_groups},), got {levels.shape}"
    assert np.issubdtype(levels.dtype, np.integer), f"levels must be integers, got {levels.dtype}"
    assert levels.min() >= 0 and levels.max() < space.n_levels, f"levels out of [0, {space.n_levels - 1}]: {levels}"
    assert proposal.kind in KINDS, f"kind must be one of {KINDS}, got {proposal.kind!r}"
    for resource, limit in problem.constraints.limits.items():
        if resource in space.costs and proposal.kind == TRIAL:
            assert space.cost(resource, levels) <= limit, f"{resource} over budget: {levels.tolist()}"
    if proposal.fidelity is not None:
        assert isinstance(proposal.fidelity, (int, np.integer)) and proposal.fidelity >= 0, proposal.fidelity


def _fingerprint(transcript: Transcript) -> list[tuple[list[int], int | None]]:
    return [(np.asarray(p.levels).tolist(), p.fidelity) for p in transcript.proposals]


class SearcherTestCase:
    """Tests every searcher must pass; subclasses named ``Test...`` pick the searcher."""

    #: registry name given to :func:`autoprune.searchers.make_searcher`
    searcher_name: ClassVar[str | None] = None
    #: constructor options given with it
    searcher_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: proposals one driven run may take (searchers that never finish stop here)
    max_proposals: ClassVar[int] = 16
    #: when set, the best ok result on separable problems must be this close to the optimum
    optimality_tolerance: ClassVar[float | None] = None
    #: proposals granted to reach that optimum
    optimality_proposals: ClassVar[int] = 400
    #: case name -> reason, for known bugs: those cases are expected to raise RuntimeError
    expected_failures: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def make_searcher(self, problem: Problem, seed: int) -> Searcher:
        """The searcher under test; override when a registry name is not enough."""
        if self.searcher_name is None:
            raise NotImplementedError("set searcher_name or override make_searcher")
        return make_searcher(self.searcher_name, problem=problem, seed=seed, options=dict(self.searcher_options))

    @pytest.fixture(params=CASE_NAMES)
    def case(self, request: pytest.FixtureRequest) -> SyntheticCase:
        reason = self.expected_failures.get(request.param)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(reason=reason, raises=RuntimeError, strict=False))
        return build_case(request.param)

    def test_proposals_lie_in_grid_and_budget(self, case: SyntheticCase) -> None:
        transcript = drive(self.make_searcher(case.problem, 0), case.quality,
                           max_proposals=self.max_proposals, fail_every=5)
        assert transcript.proposals, "a reachable budget must get at least one proposal"
        for proposal in transcript.proposals:
            check_proposal(case.problem, proposal)

    def test_same_seed_and_results_give_same_proposals(self, case: SyntheticCase) -> None:
        runs = []
        saved = np.random.get_state(), random.getstate()
        try:
            for global_seed in (1, 2):  # a searcher must own its randomness, not borrow the global state
                np.random.seed(global_seed)
                random.seed(global_seed)
                fresh = build_case(case.name)
                searcher = self.make_searcher(fresh.problem, 7)
                transcript = drive(searcher, fresh.quality, max_proposals=self.max_proposals, fail_every=4)
                runs.append(_fingerprint(transcript))
        finally:
            np.random.set_state(saved[0])
            random.setstate(saved[1])
        assert runs[0] == runs[1]

    @pytest.mark.parametrize("n", [1, 3])
    def test_ask_returns_at_most_n(self, case: SyntheticCase, n: int) -> None:
        transcript = drive(self.make_searcher(case.problem, 0), case.quality,
                           max_proposals=self.max_proposals, batch_size=n)
        assert transcript.batches
        assert all(1 <= len(batch) <= n for batch in transcript.batches)

    @pytest.mark.parametrize("n", [0, -1, 2.0, "3", None])
    def test_ask_rejects_bad_n(self, n: Any) -> None:
        searcher = self.make_searcher(build_case("separable-flops0.4").problem, 0)
        with pytest.raises(ValueError):
            searcher.ask(n)

    def test_finished_searcher_proposes_nothing(self, case: SyntheticCase) -> None:
        searcher = self.make_searcher(case.problem, 0)
        transcript = drive(searcher, case.quality, max_proposals=self.max_proposals)
        if transcript.finished:
            assert searcher.finished, "an empty ask ends the run loop, so it must mean finished"
        searcher.finished = True
        for n in (1, 8):
            assert searcher.ask(n) == []
        searcher.tell([])

    def test_tolerates_failed_results(self, case: SyntheticCase) -> None:
        for fail_every in (1, 2):  # every trial failed, then every other one
            searcher = self.make_searcher(case.problem, 0)
            transcript = drive(searcher, case.quality, max_proposals=self.max_proposals, fail_every=fail_every)
            assert transcript.proposals
            for proposal in transcript.proposals:
                check_proposal(case.problem, proposal)

    def test_tolerates_empty_tell(self, case: SyntheticCase) -> None:
        searcher = self.make_searcher(case.problem, 0)
        searcher.tell([])
        for proposal in searcher.ask(3):
            check_proposal(case.problem, proposal)
        searcher.tell([])

    @pytest.mark.timeout(60)
    def test_run_is_bounded_and_counted(self, case: SyntheticCase) -> None:
        searcher = self.make_searcher(case.problem, 3)
        transcript = drive(searcher, case.quality, max_proposals=self.max_proposals, fail_every=3)
        n = len(transcript.proposals)
        assert transcript.finished or n == self.max_proposals, "the searcher stopped proposing without finishing"
        assert (searcher.n_asked, searcher.n_told) == (n, n)

    def test_handed_out_levels_are_never_mutated(self, case: SyntheticCase) -> None:
        searcher = self.make_searcher(case.problem, 0)
        transcript = drive(searcher, case.quality, max_proposals=self.max_proposals, fail_every=3)
        recorded = [r.levels.tolist() for r in transcript.results]  # the driver copied them at evaluation
        assert transcript.levels() == recorded, "a searcher changed a candidate it had already proposed"

    def test_declarations_match_behaviour(self, case: SyntheticCase) -> None:
        """``keeps_choice`` and ``sets_fidelity`` are what the CLI and ``pick`` go by."""
        searcher = self.make_searcher(case.problem, 0)
        transcript = drive(searcher, case.quality, max_proposals=self.max_proposals, fail_every=5)
        if not searcher.keeps_choice:
            assert searcher.incumbent() is None, "a searcher without keeps_choice must not choose"
        elif searcher.incumbent() is not None:
            assert searcher.incumbent() in {r.trial_id for r in transcript.results}
        assert isinstance(searcher.choice_after, str) and bool(searcher.choice_after) == searcher.keeps_choice
        if searcher.sets_fidelity:
            assert all(p.fidelity is not None for p in transcript.proposals), "sets_fidelity: every proposal's"

    def test_options_are_json(self) -> None:
        searcher = self.make_searcher(build_case("separable-flops0.4").problem, 5)
        options = searcher.options()
        assert isinstance(options, dict) and all(isinstance(k, str) for k in options)
        assert json.loads(json.dumps(options)) == options
        assert options.get("seed") == 5

    def test_rejects_negative_seed(self) -> None:
        with pytest.raises(ValueError):
            self.make_searcher(build_case("separable-flops0.4").problem, -1)

    def test_module_imports_no_torch(self) -> None:
        searcher = self.make_searcher(build_case("separable-flops0.4").problem, 0)
        tree = ast.parse(inspect.getsource(inspect.getmodule(type(searcher))))
        imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [m for m in imported if m.split(".")[0] == "torch"], "searchers must not import torch"

    @pytest.mark.parametrize("name", [n for n in CASE_NAMES if n.startswith("separable")])
    def test_near_optimal_on_separable_problems(self, name: str) -> None:
        if self.optimality_tolerance is None:
            pytest.skip("this searcher makes no optimality claim")
        case = build_case(name)
        _, optimum = exact_optimum(case.problem, case.quality)
        transcript = drive(self.make_searcher(case.problem, 0), case.quality,
                           max_proposals=self.optimality_proposals)
        best = max((r.metrics["accuracy"] for r in transcript.results if r.ok and r.kind == TRIAL), default=0.0)
        assert best * case.quality.dense_value >= (1.0 - self.optimality_tolerance) * optimum
