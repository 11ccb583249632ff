"""The ``dp`` searcher: probes as measurements, the known optimum, additivity, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.searchers import make_searcher
from autoprune.searchers.base import MEASUREMENT, TRIAL
from autoprune.testing.driver import SyntheticExecutor, drive, evaluate
from autoprune.testing.searcher_suite import SIZES, SUITE_GRID, build_case
from autoprune.testing.synthetic import (
    SeparableQuality,
    chain_space,
    exact_optimum,
    make_problem,
    separable_quality,
    separable_space,
)


def _case(ratio: float = 0.4) -> tuple[Any, SeparableQuality]:
    problem = make_problem(separable_space(SIZES, SUITE_GRID), ratio)
    quality = separable_quality(problem.space, np.random.default_rng(3).uniform(0.5, 2.0, len(SIZES)))
    return problem, quality


@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.7])
def test_allocation_at_the_full_budget_is_the_known_optimum(ratio: float) -> None:
    """The synthetic quality is separable, so its distortion adds up exactly and the DP,
    with one cost unit per cell, must land on the exact optimum."""
    problem, quality = _case(ratio)
    searcher = make_searcher("dp", problem=problem, seed=0, options={"buckets": 10**6})
    transcript = drive(searcher, quality, max_proposals=500)
    assert transcript.finished
    trials = [r for r in transcript.results if r.kind == TRIAL]
    _, optimum = exact_optimum(problem, quality)
    assert float(quality(trials[0].levels)) == pytest.approx(optimum)


def test_probes_are_measurements_and_allocations_are_trials_under_shrinking_budgets() -> None:
    problem, quality = _case(0.5)
    searcher = make_searcher("dp", problem=problem, seed=0, options={"calibration_samples": 64})
    transcript = drive(searcher, quality, max_proposals=500)
    proposals = transcript.proposals
    kept = np.array([g.kept for g in problem.space.groups])
    distinct = sum(len(set(row[1:]) - {row[0]}) for row in kept.tolist())
    probes = proposals[: 1 + distinct]
    assert all(p.kind == MEASUREMENT and p.fidelity == 0 and p.eval_samples == 64 for p in probes)
    assert not probes[0].levels.any(), "the first probe is the dense model, the baseline"
    assert all(np.count_nonzero(p.levels) == 1 for p in probes[1:]), "a probe prunes one group"
    assert any(not problem.feasible(p.levels)[0] for p in probes), "probes go over budget by design"
    checks = [p for p in proposals[1 + distinct:] if p.kind == MEASUREMENT]
    assert len(checks) == 8 and all(np.count_nonzero(p.levels) >= 2 for p in checks)
    trials = [p for p in proposals if p.kind == TRIAL]
    assert 2 <= len(trials) <= 6
    flops = [float(problem.space.cost("flops", p.levels)) for p in trials]
    assert flops == sorted(flops, reverse=True), "the spread of budgets goes down from the requested one"
    assert all(problem.feasible(p.levels)[0] and p.fidelity is None for p in trials)


def test_additivity_is_exact_on_a_separable_quality_and_reported() -> None:
    problem, quality = _case(0.4)
    searcher = make_searcher("dp", problem=problem, seed=1, options={"additivity_checks": 6})
    drive(searcher, quality, max_proposals=500)
    report = searcher.report()
    check = report["additivity"]
    assert check["checked"] == 6
    assert check["spearman"] == pytest.approx(1.0)
    assert check["predicted"] == pytest.approx(check["measured"])
    assert any(line.startswith("additivity check: Spearman 1.00") for line in report["summary"])
    assert len(report["curves"]) == problem.space.n_groups and report["curves"][0][0] == 0.0


def test_a_non_additive_distortion_shows_in_the_rank_correlation() -> None:
    """Measured distortion that is not the sum of the curves (here: each group's loss counts
    only beyond a shared threshold) ranks below 1."""
    problem, quality = _case(0.4)
    searcher = make_searcher("dp", problem=problem, seed=2, options={"additivity_checks": 12})
    rng = np.random.default_rng(0)
    n = 0
    while True:
        proposals = searcher.ask(searcher.batch_size)
        if not proposals:
            break
        results = evaluate(proposals, quality, first_trial_id=n, fail_every=None)
        for r in results:
            r.metrics["kl_to_dense"] = float(r.metrics["kl_to_dense"] * rng.uniform(0.2, 5.0))
        n += len(results)
        searcher.tell(results)
    rho = searcher.report()["additivity"]["spearman"]
    assert rho is not None and rho < 0.99


def test_failed_probes_bar_their_levels() -> None:
    problem, quality = _case(0.4)
    searcher = make_searcher("dp", problem=problem, seed=0)
    transcript = drive(searcher, quality, max_proposals=500, fail_every=7)
    assert searcher.curves is not None and np.isinf(searcher.curves).any()
    for result in transcript.results:
        if result.kind == TRIAL:
            levels = result.levels
            assert np.isfinite(searcher.curves[np.arange(len(levels)), levels]).all()


@pytest.mark.parametrize(("options", "named"), [
    ({"distortion": "l1"}, "distortion"),
    ({"calibration_samples": 0}, "calibration_samples"),
    ({"additivity_checks": -1}, "additivity_checks"),
    ({"budget_fractions": [1.2]}, "budget_fractions"),
    ({"budget_fractions": []}, "budget_fractions"),
    ({"buckets": 0}, "buckets"),
])
def test_bad_options_name_the_argument(options: dict[str, Any], named: str) -> None:
    with pytest.raises(UserError, match=named):
        make_searcher("dp", problem=build_case("separable-flops0.4").problem, seed=0, options=options)


def test_coupled_chain_allocations_stay_within_budget() -> None:
    problem = make_problem(chain_space(SIZES, SUITE_GRID), 0.2)
    quality = separable_quality(problem.space, np.ones(len(SIZES)))
    searcher = make_searcher("dp", problem=problem, seed=0)
    transcript = drive(searcher, quality, max_proposals=500)
    trials = [r for r in transcript.results if r.kind == TRIAL]
    assert trials and all(problem.feasible(r.levels)[0] for r in trials)
    assert searcher.report()["frontier"] == 2


# ---- the real run loop: probes journaled, resumed without redoing, never on the front ------------


def _loop(run_dir: Path, executor: SyntheticExecutor, trials: int = 40) -> list[dict[str, Any]]:
    from autoprune.loop import run_loop  # imports torch (executors); only these tests need it
    from autoprune.store.journal import Journal

    problem, _ = _case(0.4)
    run_dir.mkdir(exist_ok=True)
    journal = Journal(run_dir, writable=True)
    searcher = make_searcher("dp", problem=problem, seed=0)
    try:
        run_loop(searcher=searcher, executor=executor, journal=journal, trials=trials, default_fidelity=100,
                 seed=0, progress=False)
    except KeyboardInterrupt:
        pass
    return [journal.records[i] for i in sorted(journal.records)]


def test_probes_are_journaled_resumed_without_redoing_and_never_on_the_front(tmp_path: Path) -> None:
    from autoprune.store.front import pareto_front, trials_table

    problem, quality = _case(0.4)
    whole = _loop(tmp_path / "whole", SyntheticExecutor(quality))
    measurements = [r for r in whole if r.get("kind") == MEASUREMENT]
    trials = [r for r in whole if "kind" not in r]
    assert len(measurements) > 40 > len(trials) > 0, "measurements do not count against --trials 40"

    first = SyntheticExecutor(quality, stop_after=20)
    partial = _loop(tmp_path / "resumed", first)
    assert len(partial) == 20
    second = SyntheticExecutor(quality)
    resumed = _loop(tmp_path / "resumed", second)
    assert not set(second.evaluated) & {r["trial_id"] for r in partial}, "a journaled probe was evaluated again"
    strip = [{k: v for k, v in r.items() if k != "finished_at"} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k != "finished_at"} for r in whole]

    table = trials_table(resumed, problem.space.group_names, problem.constraints.limits)
    front = pareto_front(table)
    probe_ids = {r["trial_id"] for r in measurements}
    assert not set(front["trial_id"]) & probe_ids
    assert set(front["trial_id"]) <= {r["trial_id"] for r in trials}
    assert table.loc[table["kind"] == MEASUREMENT, "within_budget"].eq(False).any(), "probes go over budget"
