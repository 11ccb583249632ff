"""``emo-pms``: conformance, the knapsack against brute force, a known optimum, resume by
replay through the real run loop, and the stage split's bookkeeping."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.searchers import emo_pms_parts, make_searcher
from autoprune.searchers.base import MEASUREMENT, TRIAL, Problem
from autoprune.searchers.emo_pms_parts import best_combinations
from autoprune.space.stage_split import OUTPUT, StageSplit
from autoprune.testing.driver import SyntheticExecutor, drive
from autoprune.testing.searcher_suite import SIZES, SUITE_GRID, SearcherTestCase
from autoprune.testing.synthetic import (
    SeparableQuality,
    even_stages,
    exact_optimum,
    make_problem,
    residual_space,
    separable_quality,
    separable_space,
    stages_in_order,
)

SMALL = {"pop_size": 6, "generations": 2, "calibration_samples": 64}


def with_stages(problem: Problem, n_stages: int) -> Problem:
    return dataclasses.replace(problem, stages=lambda: even_stages(problem.space, n_stages))


class TestEmoPms(SearcherTestCase):
    searcher_name = "emo-pms"
    searcher_options = MappingProxyType(SMALL)
    max_proposals = 120


def _separable(ratio: float, seed: int = 3) -> tuple[Problem, SeparableQuality]:
    problem = make_problem(separable_space(SIZES, SUITE_GRID), ratio)
    quality = separable_quality(problem.space, np.random.default_rng(seed).uniform(0.5, 2.0, len(SIZES)))
    return with_stages(problem, 3), quality


def test_measurements_first_then_trials_within_shrinking_budgets() -> None:
    problem, quality = _separable(0.4)
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options={"pop_size": 8, "generations": 3})
    transcript = drive(searcher, quality, max_proposals=2000)
    assert transcript.finished
    kinds = [p.kind for p in transcript.proposals]
    first_trial = kinds.index(TRIAL)
    assert set(kinds[:first_trial]) == {MEASUREMENT} and set(kinds[first_trial:]) == {TRIAL}
    measurements = transcript.proposals[:first_trial]
    assert all(p.fidelity == 0 for p in measurements)
    # every member is pruned inside one sub-network only (the others dense)
    split = searcher.split
    for p in measurements:
        pruned = {split.owner[g] for g in np.flatnonzero(p.levels)}
        assert len(pruned) <= 1, p.levels
    trials = [r for r in transcript.results if r.kind == TRIAL]
    flops = [problem.space.relative_cost("flops", r.levels) for r in trials]
    assert trials and all(problem.feasible(r.levels)[0] for r in trials)
    assert flops == sorted(flops, reverse=True), "budgets shrink along the fractions"
    report = searcher.report()
    assert report["split"]["boundaries"] == list(split.boundaries) and len(report["fronts"]) == 3


def test_whole_networks_are_the_best_combinations_of_the_fronts_by_brute_force() -> None:
    """On a separable quality the summed impairment is the whole network's loss: the chosen
    combination at each budget is the best over every combination of the fronts found."""
    problem, quality = _separable(0.4)
    searcher = make_searcher("emo-pms", problem=problem, seed=1, options={"pop_size": 8, "generations": 3})
    transcript = drive(searcher, quality, max_proposals=2000)
    trials = {tuple(r.levels.tolist()) for r in transcript.results if r.kind == TRIAL}
    fronts = [[np.array(m["levels"]) for m in front] for front in searcher.report()["fronts"]]
    groups = [np.array(searcher.split.groups_of(k)) for k in range(searcher.split.n_stages)]
    best: dict[float, tuple[float, tuple[int, ...]]] = {}
    for combo in itertools.product(*fronts):
        levels = problem.space.dense_candidate()
        for g, sub in zip(groups, combo):
            levels[g] = sub
        value = float(quality.accuracy(levels))
        for fraction in searcher.budget_fractions:
            if problem.space.cost("flops", levels) <= problem.constraints.limits["flops"] * fraction:
                if fraction not in best or value > best[fraction][0] + 1e-12:
                    best[fraction] = (value, tuple(levels.tolist()))
    expected = {levels for _, levels in best.values()}
    found = {tuple(r.levels.tolist()): float(r.metrics["accuracy"]) for r in transcript.results if r.kind == TRIAL}
    assert trials and len(found) == len(expected)
    assert sorted(found.values()) == pytest.approx(sorted(v for v, _ in best.values()))


def test_near_the_exact_optimum_on_a_separable_problem() -> None:
    problem, quality = _separable(0.4)
    _, optimum = exact_optimum(problem, quality)
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options={"pop_size": 12, "generations": 6})
    transcript = drive(searcher, quality, max_proposals=5000)
    best = max(float(r.metrics["accuracy"]) for r in transcript.results if r.kind == TRIAL and r.ok)
    assert best * quality.dense_value >= 0.98 * optimum


def test_merging_fronts_equals_enumerating_them_when_costs_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, _ = _separable(0.4)
    rng = np.random.default_rng(0)
    split = problem.stages()
    groups = [np.array(split.groups_of(k)) for k in range(split.n_stages)]
    fronts = [[rng.integers(0, problem.space.n_levels, size=len(g)) for _ in range(7)] for g in groups]
    impairments = [list(rng.uniform(0, 1, size=7)) for _ in groups]
    fractions = [1.0, 0.8, 0.6, 0.3]
    enumerated = best_combinations(problem, groups, fronts, impairments, fractions)
    monkeypatch.setattr(emo_pms_parts, "MAX_ENUMERATED", 1)
    merged = best_combinations(problem, groups, fronts, impairments, fractions)
    assert any(e is not None for e in enumerated)
    for e, m in zip(enumerated, merged):
        assert (e is None and m is None) or np.array_equal(e, m)


def test_refuses_a_problem_without_stages_in_one_sentence() -> None:
    problem = make_problem(separable_space(SIZES, SUITE_GRID), 0.4)
    with pytest.raises(UserError, match="stage boundaries.*use emo"):
        make_searcher("emo-pms", problem=problem, seed=0)


@pytest.mark.parametrize("options, named", [({"cost": "energy"}, "cost"), ({"sub_networks": 0}, "sub_networks"),
                                            ({"budget_fractions": [1.5]}, "budget_fractions"),
                                            ({"gpir_samples": -3}, "gpir_samples"), ({"crossover": "x"}, "crossover")])
def test_bad_options_name_the_argument(options: dict[str, Any], named: str) -> None:
    problem, _ = _separable(0.4)
    with pytest.raises(UserError, match=named):
        make_searcher("emo-pms", problem=problem, seed=0, options=options)


def test_a_language_model_is_measured_on_fewer_held_out_samples_by_default() -> None:
    problem, _ = _separable(0.4)
    image = make_searcher("emo-pms", problem=problem, seed=0)
    assert image.calibration_samples == 512 and image.gpir_samples is None
    language = make_searcher("emo-pms", problem=dataclasses.replace(problem, language_model=True), seed=0)
    assert language.calibration_samples == 16 and language.gpir_samples == 16
    assert "on 16 held-out sequences" in language.plan(6) and "GPIR reuses them" in language.plan(6)
    told = make_searcher("emo-pms", problem=dataclasses.replace(problem, language_model=True), seed=0,
                         options={"calibration_samples": 32, "gpir_samples": None})
    assert told.calibration_samples == 32 and told.gpir_samples is None
    assert language.options()["gpir_samples"] == 16, "run.json records what was used"


def test_fewer_sub_networks_merge_consecutive_stages() -> None:
    problem, quality = _separable(0.4)
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options={**SMALL, "sub_networks": 2})
    assert searcher.split.n_stages == 2 and searcher.split.boundaries[-1] == OUTPUT
    assert list(searcher.split.owner) == sorted(searcher.split.owner)


def test_more_sub_networks_than_stages_keep_the_stages_and_the_plan_says_so() -> None:
    problem, _ = _separable(0.4)
    stages = make_searcher("emo-pms", problem=problem, seed=0, options=SMALL).split.n_stages
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options={**SMALL, "sub_networks": 99})
    assert searcher.split.n_stages == stages
    assert f"sub_networks=99 asked, but the model divides into {stages} stages" in searcher.plan(6)
    assert "asked" not in make_searcher("emo-pms", problem=problem, seed=0, options=SMALL).plan(6)


def test_gpir_reuses_the_search_measurements_when_the_samples_agree() -> None:
    problem, quality = _separable(0.4)
    apart = drive(make_searcher("emo-pms", problem=problem, seed=0, options=SMALL), quality, max_proposals=2000)
    same = drive(make_searcher("emo-pms", problem=problem, seed=0, options={**SMALL, "gpir_samples": 64}),
                 quality, max_proposals=2000)
    gpir = [p for p in apart.proposals if p.kind == MEASUREMENT and p.eval_samples is None]
    assert len(gpir) > 1  # the dense model's, then the fronts'
    assert not [p for p in same.proposals if p.kind == MEASUREMENT and p.eval_samples is None]
    assert [p.levels.tolist() for p in same.proposals if p.kind == TRIAL] == \
        [p.levels.tolist() for p in apart.proposals if p.kind == TRIAL]


def test_a_population_answered_whole_from_earlier_members_goes_back_and_the_search_ends() -> None:
    """A one-group sub-network soon has nothing new to measure: every member of a
    population was measured before. That population goes straight back to pymoo (once it
    stalled the sub-network, and the run ended without a single trial)."""
    problem = make_problem(separable_space(SIZES, SUITE_GRID), 0.4)
    problem = dataclasses.replace(problem, stages=lambda: stages_in_order(problem.space, [0] + [1] * (len(SIZES) - 1)))
    quality = separable_quality(problem.space, np.random.default_rng(3).uniform(0.5, 2.0, len(SIZES)))
    searcher = make_searcher("emo-pms", problem=problem, seed=0,
                             options={"pop_size": 6, "generations": 5, "sub_networks": 2})
    transcript = drive(searcher, quality, max_proposals=2000)
    lone = searcher.searches[0]
    assert len(lone.groups) == 1 and lone.n_generations == 5 and lone.done
    alone = {tuple(p.levels.tolist()) for p in transcript.proposals
             if p.kind == MEASUREMENT and not np.any(np.delete(p.levels, lone.groups))}
    assert len(alone) <= problem.space.n_levels, "no member of the lone group is measured twice"
    assert transcript.finished and any(p.kind == TRIAL for p in transcript.proposals)


# ---- groups that span sub-networks ---------------------------------------------------------


def test_a_residual_stream_is_searched_with_the_stage_that_starts_it() -> None:
    """residual_space numbers each stage's stream group before its blocks' inner groups; the
    stream of stage 0 is read by stage 1's first block. It belongs to stage 0's sub-network,
    so its measurements leave stage 1 dense and stage 1's leave it dense."""
    space = residual_space([8, 16, 32], SUITE_GRID, blocks=2)
    stage_of = [g // 3 for g in range(space.n_groups)]  # stream, inner, inner per stage
    problem = dataclasses.replace(make_problem(space, 0.4), stages=lambda: stages_in_order(space, stage_of))
    quality = separable_quality(space, np.random.default_rng(0).uniform(0.5, 2.0, space.n_groups))
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options=SMALL)
    assert searcher.split.groups_of(0) == (0, 1, 2) and searcher.split.groups_of(1) == (3, 4, 5)
    transcript = drive(searcher, quality, max_proposals=2000)
    stream_pruned = [p for p in transcript.proposals if p.kind == MEASUREMENT and p.levels[0] > 0]
    assert stream_pruned and all(not p.levels[3:].any() for p in stream_pruned)
    trials = [r for r in transcript.results if r.kind == TRIAL]
    assert trials and all(problem.feasible(r.levels)[0] for r in trials)


def test_a_split_refuses_a_boundary_carrying_a_later_stages_group() -> None:
    with pytest.raises(ValueError, match="carries group"):
        StageSplit(boundaries=("a", OUTPUT), owner=(0, 1), carried=(1, None))
    with pytest.raises(ValueError, match="own no group"):
        StageSplit(boundaries=("a", OUTPUT), owner=(0, 0), carried=(None, None))


# ---- the real run loop: measurements journaled and replayed on resume ---------------------


def _loop(run_dir: Path, executor: SyntheticExecutor) -> list[dict[str, Any]]:
    from autoprune.loop import run_loop  # imports torch (executors); only these tests need it
    from autoprune.store.journal import Journal

    problem, _ = _separable(0.4)
    run_dir.mkdir(exist_ok=True)
    journal = Journal(run_dir, writable=True)
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options=SMALL)
    try:
        run_loop(searcher=searcher, executor=executor, journal=journal, trials=10, default_fidelity=100,
                 seed=0, progress=False)
    except KeyboardInterrupt:
        pass
    return [journal.records[i] for i in sorted(journal.records)]


@pytest.mark.parametrize("stop_after", [3, 30])
def test_a_run_killed_mid_search_resumes_by_replay(tmp_path: Path, stop_after: int) -> None:
    _, quality = _separable(0.4)
    whole = _loop(tmp_path / "whole", SyntheticExecutor(quality))
    assert any(r.get("kind") == MEASUREMENT for r in whole) and any("kind" not in r for r in whole)
    partial = _loop(tmp_path / "resumed", SyntheticExecutor(quality, stop_after=stop_after))
    assert len(partial) == stop_after
    second = SyntheticExecutor(quality)
    resumed = _loop(tmp_path / "resumed", second)
    assert not set(second.evaluated) & {r["trial_id"] for r in partial}, "a journaled measurement was redone"
    strip = [{k: v for k, v in r.items() if k != "finished_at"} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k != "finished_at"} for r in whole]


def test_plan_counts_the_measurements_apart_from_the_trials() -> None:
    problem, _ = _separable(0.4)
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options={"pop_size": 8, "generations": 2})
    assert "3 sub-networks" in searcher.plan(40) and "at most 48 measurements" in searcher.plan(40)
    assert "--trials 3 keeps only the first 3" in searcher.plan(3)


def test_mimic_steps_train_every_pruned_measurement_and_not_the_dense_one() -> None:
    problem, quality = _separable(0.4)
    searcher = make_searcher("emo-pms", problem=problem, seed=0, options={**SMALL, "mimic_steps": 7})
    assert type(searcher).measurement_training({"mimic_steps": 7}) == "features"
    assert type(searcher).measurement_training({}) == "task"
    transcript = drive(searcher, quality, max_proposals=2000)
    dense = problem.space.dense_candidate().tolist()
    measured = [p for p in transcript.proposals if p.kind == MEASUREMENT]
    assert {p.fidelity for p in measured if p.levels.tolist() == dense} == {0}
    assert {p.fidelity for p in measured if p.levels.tolist() != dense} == {7}
    assert searcher.options()["mimic_steps"] == 7
    assert "each after 7 steps of feature mimicking" in searcher.plan(100)
    with pytest.raises(UserError, match="mimic_steps"):
        make_searcher("emo-pms", problem=problem, seed=0, options={"mimic_steps": -1})
