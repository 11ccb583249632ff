"""The front: only ok trials within budget and at the run's last stage compete."""

from __future__ import annotations

import numpy as np

from autoprune.store.front import last_stage, pareto_front, trials_table


def _record(trial_id: int, levels: list[int], accuracy: float, flops: int, *, fidelity: int = 100,
            eval_samples: int | None = None, status: str = "ok") -> dict:
    metrics = {"accuracy": accuracy, "flops": flops, "params": flops // 10, "latency_ms": flops / 1e6}
    return {"trial_id": trial_id, "levels": levels, "status": status, "fidelity": fidelity,
            "eval_samples": eval_samples, "metrics": metrics if status == "ok" else None}


def test_single_stage_runs_keep_every_trial() -> None:
    table = trials_table([_record(0, [1, 1], 0.9, 100), _record(1, [2, 2], 0.8, 50)], ["a", "b"], {})
    assert list(last_stage(table)["trial_id"]) == [0, 1]
    assert list(pareto_front(table)["trial_id"]) == [0, 1]


def test_early_stages_do_not_compete_with_the_last() -> None:
    # a trial scored after little retraining or on little data looks better than it is
    records = [
        _record(0, [1, 1], 0.99, 40, fidelity=10, eval_samples=100),   # early stage: dominates on paper
        _record(1, [2, 1], 0.98, 40, fidelity=40, eval_samples=100),   # longer retraining, small data
        _record(2, [2, 2], 0.90, 60, fidelity=40, eval_samples=400),   # last stage
        _record(3, [3, 2], 0.85, 50, fidelity=40, eval_samples=400),   # last stage, cheaper
        _record(4, [3, 3], 0.95, 30, fidelity=40, eval_samples=400, status="failed"),
    ]
    table = trials_table(records, ["a", "b"], {"flops": 100})
    assert list(last_stage(table)["trial_id"]) == [2, 3, 4]
    assert list(pareto_front(table)["trial_id"]) == [2, 3]


def test_budget_is_applied_before_choosing_the_last_stage() -> None:
    records = [_record(0, [1, 1], 0.9, 200, fidelity=400), _record(1, [2, 2], 0.8, 50, fidelity=100)]
    table = trials_table(records, ["a", "b"], {"flops": 100})
    assert not table.loc[0, "within_budget"] and table.loc[1, "within_budget"]
    assert list(pareto_front(table)["trial_id"]) == [1]
    assert np.isnan(table.loc[0, "kl_to_dense"])  # metric columns exist even when a searcher never wrote them


def test_a_candidate_scored_on_several_draws_shows_its_mean() -> None:
    lucky = [_record(0, [1, 1], 0.95, 50), _record(1, [1, 1], 0.75, 50)]  # one candidate, two draws
    for record, draw in zip(lucky, (0, 1)):
        record["draw"] = draw
    steady = _record(2, [2, 1], 0.90, 50)
    table = trials_table([*lucky, steady], ["a", "b"], {})
    assert list(table["draw"]) == [0, 1, 0], "a record without a draw is on draw 0"
    front = pareto_front(table)
    assert list(front["trial_id"]) == [2], "0.85 on average: dominated by 0.90 at the same cost"
    both = pareto_front(trials_table([*lucky], ["a", "b"], {}))
    assert list(both["trial_id"]) == [0] and both["accuracy"].iloc[0] == 0.85 and both["draws"].iloc[0] == 2
