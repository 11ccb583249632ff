"""``dp``'s iterative mode (``rounds``): each round measures on the last round's model.

On a separable synthetic quality the distortion adds up exactly, so every round's answer
is known by brute force: round 1 the best candidate under its intermediate limit, each
later round the best candidate under its limit among those that prune at least what the
round before pruned (its channels are gone)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.searchers import make_searcher
from autoprune.searchers.base import MEASUREMENT, TRIAL, Problem, Result
from autoprune.space.levels import LevelGrid
from autoprune.testing.driver import SyntheticExecutor, drive, evaluate
from autoprune.testing.searcher_suite import SIZES, SUITE_GRID, SearcherTestCase, build_case
from autoprune.testing.synthetic import (
    SeparableQuality,
    all_candidates,
    make_problem,
    separable_quality,
    separable_space,
)


class TestDPRounds(SearcherTestCase):
    searcher_name = "dp"
    searcher_options = MappingProxyType({"rounds": 3, "round_steps": 20})
    max_proposals = 200


def _tiny(ratio: float) -> tuple[Problem, SeparableQuality]:
    grid = LevelGrid.from_step(step=0.125, min_ratio=0.125)
    problem = make_problem(separable_space((8, 8, 16, 8), grid), ratio)
    return problem, separable_quality(problem.space, [1.0, 1.7, 0.6, 1.3])


def _best(problem: Problem, quality: SeparableQuality, limits: dict[str, float], at_least: np.ndarray) -> np.ndarray:
    """Brute force: the best candidate within ``limits`` pruning at least ``at_least`` does."""
    space = problem.space
    candidates = all_candidates(space)
    kept = np.stack([space.kept_counts(c) for c in candidates])
    ok = (kept <= space.kept_counts(at_least)).all(axis=1)
    for resource, limit in limits.items():
        ok &= space.cost(resource, candidates) <= limit
    values = np.where(ok, quality(candidates), -np.inf)
    return kept[int(np.argmax(values))]


@pytest.mark.parametrize(("rounds", "ratio"), [(2, 0.3), (3, 0.2), (3, 0.5)])
def test_each_round_is_the_known_optimum_from_the_last(rounds: int, ratio: float) -> None:
    problem, quality = _tiny(ratio)
    searcher = make_searcher("dp", problem=problem, seed=0,
                             options={"rounds": rounds, "buckets": 10**6, "additivity_checks": 0})
    transcript = drive(searcher, quality, max_proposals=2000)
    assert transcript.finished
    steps = [r for r in transcript.results if r.kind == MEASUREMENT and r.fidelity != 0]
    assert len(steps) == rounds - 1
    base = problem.space.uniform_candidate(0)
    for r, step in enumerate(steps):
        expected = _best(problem, quality, searcher.round_limits(r), base)
        assert problem.space.kept_counts(step.levels).tolist() == expected.tolist(), f"round {r + 1}"
        base = step.levels
    final = next(r for r in transcript.results if r.kind == TRIAL)
    expected = _best(problem, quality, problem.constraints.limits, base)
    assert problem.space.kept_counts(final.levels).tolist() == expected.tolist()


def test_the_schedule_is_geometric_from_dense_to_the_target() -> None:
    problem, _ = _tiny(0.2)
    searcher = make_searcher("dp", problem=problem, seed=0, options={"rounds": 3})
    dense = float(problem.space.dense["flops"])
    target = problem.constraints.limits["flops"]
    got = [searcher.round_limits(r)["flops"] for r in range(3)]
    assert got == pytest.approx([dense * (target / dense) ** (1 / 3), dense * (target / dense) ** (2 / 3), target])
    assert got[0] > got[1] > got[2]


def test_rounds_continue_each_other_and_only_the_last_proposes_trials() -> None:
    problem = make_problem(separable_space(SIZES, SUITE_GRID), 0.15)
    quality = separable_quality(problem.space, np.random.default_rng(3).uniform(0.5, 2.0, len(SIZES)))
    searcher = make_searcher("dp", problem=problem, seed=0, options={"rounds": 3, "round_steps": 30})
    assert searcher.keeps_checkpoints
    transcript = drive(searcher, quality, max_proposals=2000)
    results = transcript.results
    steps = [r for r in results if r.kind == MEASUREMENT and r.fidelity == 30]
    assert len(steps) == 2
    parents = [None] + [s.trial_id for s in steps]
    space = problem.space
    for r, parent in enumerate(parents):
        probes = [x for x in results if x.kind == MEASUREMENT and x.fidelity == 0 and x.parent == parent]
        assert probes, f"round {r + 1} measures on its model"
        base = space.uniform_candidate(0) if parent is None else results[parent].levels
        assert np.array_equal(probes[0].levels, base), "each round's first probe is its model, the baseline"
        assert all((space.kept_counts(p.levels) <= space.kept_counts(base)).all() for p in probes)
        if r < 2:
            assert steps[r].parent == parent, "a round's allocation continues the model it was measured on"
            assert (space.kept_counts(steps[r].levels) <= space.kept_counts(base)).all()
            assert space.cost("flops", steps[r].levels) <= searcher.round_limits(r)["flops"]
            assert not problem.feasible(steps[r].levels)[0], "an intermediate round is over the final budget"
    trials = [r for r in results if r.kind == TRIAL]
    assert trials and all(t.parent == steps[-1].trial_id and problem.feasible(t.levels)[0] for t in trials)
    assert all((space.kept_counts(t.levels) <= space.kept_counts(steps[-1].levels)).all() for t in trials)
    report = searcher.report()
    assert [entry["trial_id"] for entry in report["rounds"]] == [s.trial_id for s in steps]
    assert any(line.startswith("dp: round 2 of 3 allocated for flops<=") for line in report["summary"])
    assert searcher.live_checkpoints() == set(), "finished: no model is continued any more"


def test_a_failed_round_ends_the_search_with_a_reason() -> None:
    problem = make_problem(separable_space(SIZES, SUITE_GRID), 0.15)
    quality = separable_quality(problem.space, np.ones(len(SIZES)))
    searcher = make_searcher("dp", problem=problem, seed=0, options={"rounds": 2})
    n = 0
    while proposals := searcher.ask(searcher.batch_size):
        results = evaluate(proposals, quality, first_trial_id=n, fail_every=None)
        for p, r in zip(proposals, results):
            if p.kind == MEASUREMENT and p.fidelity != 0:
                r.status, r.metrics, r.error = "failed", {}, "diverged"
        n += len(results)
        searcher.tell(results)
    assert searcher.finished
    assert "round 1 allocation failed" in searcher.report()["error"]


@pytest.mark.parametrize(("options", "named"), [({"rounds": 0}, "rounds"), ({"rounds": 1.5}, "rounds"),
                                                ({"round_steps": -1}, "round_steps")])
def test_bad_round_options_name_the_argument(options: dict[str, Any], named: str) -> None:
    with pytest.raises(UserError, match=named):
        make_searcher("dp", problem=build_case("separable-flops0.4").problem, seed=0, options=options)


# ---- the real run loop: parents' weights handed on, resumed mid-round ------------------------------


class _Executor(SyntheticExecutor):
    """Hands back a "state" naming the levels each job was trained at, so the test sees
    which weights a continued job received."""

    def __init__(self, quality: SeparableQuality, stop_after: int | None = None) -> None:
        super().__init__(quality, stop_after)
        self.continued: list[tuple[list[int], list[int]]] = []

    def finish(self, job: Any, result: Result) -> None:
        import torch

        if job.parent is not None:
            self.continued.append((job.init_state["levels"].tolist(), np.asarray(job.init_levels).tolist()))
        result.state = {"levels": torch.as_tensor(job.levels)} if job.keep_state else None


def _loop(run_dir: Path, executor: _Executor) -> list[dict[str, Any]]:
    from autoprune.evaluation.checkpoints import CheckpointStore
    from autoprune.loop import run_loop
    from autoprune.store.journal import Journal

    problem = make_problem(separable_space(SIZES, SUITE_GRID), 0.15)
    run_dir.mkdir(exist_ok=True)
    journal = Journal(run_dir, writable=True)
    searcher = make_searcher("dp", problem=problem, seed=0, options={"rounds": 3, "round_steps": 50})
    try:
        run_loop(searcher=searcher, executor=executor, journal=journal, trials=10, default_fidelity=100, seed=0,
                 progress=False, checkpoints=CheckpointStore(run_dir / "checkpoints"))
    except KeyboardInterrupt:
        pass
    return [journal.records[i] for i in sorted(journal.records)]


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "finished_at"} for r in records]


def test_rounds_through_the_run_loop_resume_mid_round(tmp_path: Path) -> None:
    quality = separable_quality(make_problem(separable_space(SIZES, SUITE_GRID), 0.15).space,
                                np.random.default_rng(3).uniform(0.5, 2.0, len(SIZES)))
    executor = _Executor(quality)
    whole = _loop(tmp_path / "whole", executor)
    assert executor.continued and all(got == want for got, want in executor.continued), \
        "a continued job gets its parent's weights and levels"
    steps = [r for r in whole if r.get("kind") == MEASUREMENT and r["fidelity"] == 50]
    trials = [r for r in whole if "kind" not in r]
    assert len(steps) == 2 and trials
    assert all(t["metrics"]["total_steps"] == 2 * 50 + 100 for t in trials), "the rounds' fine-tuning is counted"
    kept = {p.name for p in (tmp_path / "whole" / "checkpoints").glob("*.safetensors")}
    assert len(kept) <= 2, f"only the rounds' models are kept, not every probe's weights: {kept}"
    second_round = next(r["trial_id"] for r in whole if r.get("parent") == steps[0]["trial_id"])
    for stop_after in (5, second_round + 3, steps[1]["trial_id"] + 2):  # in rounds 1, 2 and 3
        run_dir = tmp_path / f"stopped-{stop_after}"
        partial = _loop(run_dir, _Executor(quality, stop_after=stop_after))
        assert len(partial) == stop_after
        again = _Executor(quality)
        resumed = _loop(run_dir, again)
        assert not set(again.evaluated) & {r["trial_id"] for r in partial}, "a journaled trial was evaluated again"
        assert _strip(resumed) == _strip(whole)
