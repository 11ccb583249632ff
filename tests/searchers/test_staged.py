"""Staged selection's bookkeeping: stage sizes, growing fidelity and data, parent chains, elitism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.searchers import make_searcher
from autoprune.searchers.base import Proposal, Result
from autoprune.searchers.staged import Generation, Schedule, fitness_of
from autoprune.testing.driver import Transcript, drive

from evolution_cases import hard_case

DARWIN_GEN0 = [17, 9, 5, 3]  # 16 offspring and the first parent, carried; survivors 8, 4, 2 (+ parent)
DARWIN_GEN = [16, 8, 4, 2]  # later, on the same draw: the parent's final trial is reused


def _darwin_run(generations: int, fail_every: int | None = None, fresh_draws: bool = False) -> Transcript:
    """On one draw for the whole search (darwin's default) the parent is carried through
    the stages in the first generation only."""
    case = hard_case(0.4)
    searcher = make_searcher("darwin", problem=case.problem, seed=0,
                             options={"generations": generations, "fresh_draws": fresh_draws})
    return drive(searcher, case.quality, max_proposals=10_000, fail_every=fail_every)


@pytest.mark.parametrize(("fresh_draws", "later"), [(False, DARWIN_GEN), (True, DARWIN_GEN0)])
def test_stage_sizes_fidelities_and_data_follow_the_schedule(fresh_draws: bool, later: list[int]) -> None:
    transcript = _darwin_run(generations=3, fresh_draws=fresh_draws)
    assert transcript.finished
    assert [len(b) for b in transcript.batches] == DARWIN_GEN0 + later * 2  # one stage per ask
    for i, batch in enumerate(transcript.batches):
        stage = i % 4
        assert {p.fidelity for p in batch} == {(10, 40, 50, 100)[stage]}, "additional steps per stage"
        assert {p.eval_samples for p in batch} == {(512, 1024, 2048, 4096)[stage]}
        assert all((p.parent is None) == (stage == 0) for p in batch)


def test_survivors_continue_their_own_previous_trial_and_are_the_best_of_it() -> None:
    transcript = _darwin_run(generations=3)
    by_id = {r.trial_id: r for r in transcript.results}
    first_id = 0
    for i, batch in enumerate(transcript.batches):
        if i % 4:
            previous = transcript.batches[i - 1]
            previous_ids = range(first_id - len(previous), first_id)
            for p in batch:
                assert p.parent in previous_ids, "a survivor continues a trial of the stage before"
                assert by_id[p.parent].levels.tolist() == p.levels.tolist()
            # apart from the carried first parent, survivors are the best of the stage before
            elite = transcript.batches[0][-1].levels.tolist()
            losses = sorted(by_id[j].metrics["loss"] for j in previous_ids if by_id[j].levels.tolist() != elite)
            kept = [by_id[p.parent].metrics["loss"] for p in batch if p.levels.tolist() != elite]
            assert max(kept) <= losses[len(kept) - 1] + 1e-12
        first_id += len(batch)


def test_every_chain_adds_up_to_the_cumulative_steps_of_its_stage() -> None:
    transcript = _darwin_run(generations=2)
    proposals = transcript.proposals
    for trial_id, p in enumerate(proposals):
        total, node = 0, p
        while True:
            total += node.fidelity
            if node.parent is None:
                break
            node = proposals[node.parent]
        assert total in (10, 50, 100, 200)
        assert total == {512: 10, 1024: 50, 2048: 100, 4096: 200}[p.eval_samples]


def test_the_parent_joins_the_last_stage_and_the_winner_becomes_the_next_parent() -> None:
    case = hard_case(0.4)
    searcher = make_searcher("darwin", problem=case.problem, seed=0, options={"fresh_draws": False})
    transcript = drive(searcher, case.quality, max_proposals=sum(DARWIN_GEN0))
    first_parent = transcript.batches[0][-1].levels
    assert all(batch[-1].levels.tolist() == first_parent.tolist() for batch in transcript.batches), \
        "the first parent is carried through every stage"
    finalists = transcript.results[-3:]
    best = min(finalists, key=lambda r: r.metrics["loss"])
    assert searcher.parent.tolist() == best.levels.tolist()
    assert searcher.parent_result is best
    nxt = drive(searcher, case.quality, max_proposals=sum(DARWIN_GEN))  # the next generation, same searcher
    assert not any(p.levels.tolist() == best.levels.tolist() for p in nxt.proposals), \
        "the parent's final trial is reused, not evaluated again"
    assert searcher.parent_result.metrics["loss"] <= best.metrics["loss"], "elitism: never worse"


def test_failed_trials_rank_last_and_are_never_continued() -> None:
    transcript = _darwin_run(generations=4, fail_every=3)
    by_id = {r.trial_id: r for r in transcript.results}
    parents = [p.parent for p in transcript.proposals if p.parent is not None]
    assert parents and all(by_id[j].ok for j in parents)


def test_a_generation_without_any_success_keeps_its_parent() -> None:
    case = hard_case(0.4)
    searcher = make_searcher("darwin", problem=case.problem, seed=0,
                             options={"generations": 2, "fresh_draws": False})
    transcript = drive(searcher, case.quality, max_proposals=1000, fail_every=1)
    assert transcript.finished
    assert [len(b) for b in transcript.batches] == [17, 16], "nothing survives stage 0, twice"
    assert searcher.parent.tolist() == transcript.batches[0][-1].levels.tolist()


def _result(trial_id: int, p: Proposal, loss: float | None) -> Result:
    status = "failed" if loss is None else "ok"
    metrics = {} if loss is None else {"loss": loss, "accuracy": 1 - loss}
    return Result(trial_id=trial_id, levels=p.levels, fidelity=int(p.fidelity), status=status, metrics=metrics,
                  eval_samples=p.eval_samples, parent=p.parent, draw=p.draw)


def test_fresh_stages_score_a_new_parent_at_the_last_stage_only() -> None:
    schedule = Schedule.build(offspring=4, survivors=[2, 1], steps=[0, 0], samples=[10, 40])
    children = [np.array([i, 0]) for i in range(1, 5)]
    gen = Generation(offspring=children, elite_levels=np.array([0, 0]), elite_result=None, schedule=schedule,
                     continued=False, fitness=fitness_of("loss"))
    first = gen.take(10)
    assert [p.levels[0] for p in first] == [1, 2, 3, 4] and {p.eval_samples for p in first} == {10}
    for i, p in enumerate(first):
        gen.record(_result(i, p, loss=[0.4, 0.1, None, 0.2][i]))
    last = gen.take(10)
    assert [p.levels[0] for p in last] == [2, 4, 0], "two best, then the parent"
    assert {(p.fidelity, p.eval_samples, p.parent) for p in last} == {(0, 40, None)}
    for i, p in enumerate(last):
        gen.record(_result(10 + i, p, loss=[0.3, 0.25, 0.5][i]))
    assert gen.done and gen.winner.levels.tolist() == [4, 0]


def test_a_known_parent_result_is_reused_and_wins_ties_only_when_nothing_beats_it() -> None:
    schedule = Schedule.build(offspring=2, survivors=[1], steps=[0], samples=[10])
    elite = Result(trial_id=99, levels=np.array([0, 0]), fidelity=0, status="ok", metrics={"loss": 0.2},
                   eval_samples=10)
    gen = Generation(offspring=[np.array([1, 0]), np.array([2, 0])], elite_levels=np.array([0, 0]),
                     elite_result=elite, schedule=schedule, continued=False, fitness=fitness_of("loss"))
    proposals = gen.take(10)
    assert len(proposals) == 2, "the parent is not proposed again"
    gen.record(_result(0, proposals[0], None))
    gen.record(_result(1, proposals[1], 0.3))
    assert gen.winner.result is elite


def test_the_last_stage_ranks_by_the_mean_over_its_draws() -> None:
    schedule = Schedule.build(offspring=2, survivors=[1], steps=[5], samples=[10])
    elite = Result(trial_id=99, levels=np.array([0, 0]), fidelity=5, status="ok", metrics={"loss": 0.25},
                   eval_samples=10, parent=None, draw=7)
    gen = Generation(offspring=[np.array([1, 0]), np.array([2, 0])], elite_levels=np.array([0, 0]),
                     elite_result=elite, schedule=schedule, continued=True, fitness=fitness_of("loss"),
                     draws=(7, 8))
    proposals = gen.take(10)
    assert [(p.levels[0], p.draw) for p in proposals] == [(1, 7), (2, 7), (1, 8), (2, 8), (0, 8)]
    assert (proposals[-1].fidelity, proposals[-1].eval_samples, proposals[-1].parent) == (5, 10, None), \
        "the parent's kept trial, on the other draw"
    losses = {(1, 7): 0.1, (2, 7): 0.2, (1, 8): 0.5, (2, 8): 0.2, (0, 8): 0.25}  # child 1 was lucky on draw 7
    for i, p in reversed(list(enumerate(proposals))):  # told out of order
        assert gen.record(_result(i, p, losses[(p.levels[0], p.draw)]))
    assert gen.done and gen.winner.levels.tolist() == [2, 0], "mean 0.2 beats 0.25 (parent) and 0.3"
    assert gen.winner.result.draw == 7, "the result kept for the next generation is on the first draw"


def test_a_failure_on_any_draw_ranks_last() -> None:
    schedule = Schedule.build(offspring=1, survivors=[1], steps=[5], samples=[10])
    elite = Result(trial_id=99, levels=np.array([0, 0]), fidelity=5, status="ok", metrics={"loss": 0.9},
                   eval_samples=10)
    gen = Generation(offspring=[np.array([1, 0])], elite_levels=np.array([0, 0]), elite_result=elite,
                     schedule=schedule, continued=True, fitness=fitness_of("loss"), draws=(0, 1))
    proposals = gen.take(10)
    for i, p in enumerate(proposals):
        failed = p.levels[0] == 1 and p.draw == 1
        gen.record(_result(i, p, None if failed else 0.1 if p.levels[0] == 1 else 0.9))
    assert gen.winner.levels.tolist() == [0, 0]


def test_fitness_is_worst_for_failed_missing_or_non_finite_metrics() -> None:
    fit = fitness_of("kl_to_dense")
    ok = Result(trial_id=0, levels=np.zeros(1, dtype=np.int64), fidelity=0, status="ok", metrics={"kl_to_dense": 0.5})
    assert fit(ok) == 0.5
    for metrics in ({}, {"kl_to_dense": float("nan")}, {"loss": 0.1}):
        assert math.isinf(fit(Result(trial_id=0, levels=ok.levels, fidelity=0, status="ok", metrics=metrics)))
    assert math.isinf(fit(Result(trial_id=0, levels=ok.levels, fidelity=0, status="failed")))
    assert math.isinf(fit(None))


@pytest.mark.parametrize("searcher", ["darwin", "tyr"])
@pytest.mark.parametrize(("options", "named"), [
    ({"offspring": 0}, "offspring"),
    ({"offspring": True}, "offspring"),
    ({"survivors": []}, "survivors"),
    ({"survivors": "8,4"}, "survivors"),
    ({"survivors": [2, 4, 1]}, "survivors"),
    ({"survivors": [32, 1]}, "survivors"),
    ({"survivors": [4, 2]}, "survivors"),
    ({"survivors": [4, 0, 1]}, "survivors"),
    ({"stage_samples": [0, 1, 2, 3]}, "stage_samples"),
    ({"stage_samples": [100]}, "stage_samples"),
    ({"stage_samples": [400, 300, 200, 100]}, "stage_samples"),
    ({"fitness": "accuracy"}, "fitness"),
    ({"max_swaps": 0}, "max_swaps"),
])
def test_bad_options_name_the_argument(searcher: str, options: dict, named: str) -> None:
    problem = hard_case(0.4).problem
    if searcher == "tyr" and "stage_samples" in options and len(options["stage_samples"]) == 4:
        options = {**options, "survivors": [8, 4, 2, 1]}
    with pytest.raises(UserError, match=named):
        make_searcher(searcher, problem=problem, seed=0, options=options)
