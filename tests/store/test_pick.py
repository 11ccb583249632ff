"""Picking a trial off a run: ids, constraints, the searcher's own choice, and ``auto``."""

from __future__ import annotations

import pandas as pd
import pytest

from autoprune.errors import UserError
from autoprune.pick import pick_row

DENSE = {"flops": 1000.0, "params": 100.0, "latency_ms": 2.0}


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "trial_id": [0, 1, 2, 3],
        "status": ["ok", "ok", "ok", "failed"],
        "error": [None, None, None, "out of memory"],
        "accuracy": [0.80, 0.90, 0.85, float("nan")],
        "flops": [300.0, 500.0, 200.0, 100.0],
        "params": [30.0, 50.0, 20.0, 10.0],
        "latency_ms": [1.0, 1.5, 0.8, 0.5],
    })


def test_auto_is_the_searchers_choice_where_it_keeps_one_else_the_best() -> None:
    trials = _table()
    front = trials[trials["status"] == "ok"]
    assert pick_row(trials, front, "auto", DENSE)["trial_id"] == 1, "no choice of its own: best accuracy"
    assert pick_row(trials, front, "auto", DENSE, incumbent=2)["trial_id"] == 2
    assert pick_row(trials, front, "best", DENSE, incumbent=2)["trial_id"] == 1, "best stays the front's best"
    assert pick_row(trials, front, "searcher", DENSE, incumbent=0)["trial_id"] == 0


def test_constraints_ids_and_their_errors() -> None:
    trials = _table()
    front = trials[trials["status"] == "ok"]
    assert pick_row(trials, front, "flops<=0.3", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "latency<=1.2ms,best=params", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "trial=0", DENSE)["trial_id"] == 0
    with pytest.raises(UserError, match="keeps no choice of its own"):
        pick_row(trials, front, "searcher", DENSE)
    with pytest.raises(UserError, match="trial 3 failed"):
        pick_row(trials, front, 3, DENSE)
    with pytest.raises(UserError, match="no front member satisfies"):
        pick_row(trials, front, "flops<=0.1", DENSE)


def test_constraints_take_the_budgets_units_any_case_and_spaces_between_clauses() -> None:
    trials = _table()
    front = trials[trials["status"] == "ok"]
    assert pick_row(trials, front, "flops<=0.25K", DENSE)["trial_id"] == 2, "K as in budgets: 250 MACs"
    assert pick_row(trials, front, "FLOPS <= 0.3", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "latency<=1200us", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "latency<=0.0012s", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "latency <= 1.2 ms, best=params", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "latency<0.45", DENSE)["trial_id"] == 2, "a ratio of the dense 2 ms"
    assert pick_row(trials, front, trials["trial_id"].iloc[1], DENSE)["trial_id"] == 1, "a numpy id"
    assert pick_row(trials, front, "params<=0.35 accuracy>=0.81", DENSE)["trial_id"] == 2
    assert pick_row(trials, front, "accuracy >= 0.81, best=flops", DENSE)["trial_id"] == 2
    with pytest.raises(UserError, match="accuracy takes a plain number, not 'ms'"):
        pick_row(trials, front, "accuracy>=0.8ms", DENSE)
    with pytest.raises(UserError, match="'abc' is not a number"):
        pick_row(trials, front, "flops<=abc", DENSE)


def test_nothing_matching_says_what_the_front_spans() -> None:
    trials = _table()
    front = trials[trials["status"] == "ok"]
    with pytest.raises(UserError, match=r"3 front members have flops 0\.200-0\.500 of dense, accuracy 0\.8000-0\.9000"):
        pick_row(trials, front, "flops<=0.1,accuracy>=0.95", DENSE)


def test_searcher_pick_before_darwin_chose_says_so() -> None:
    trials = _table()
    front = trials[trials["status"] == "ok"]
    with pytest.raises(UserError, match="darwin has not chosen yet .* --trials N"):
        pick_row(trials, front, "searcher", DENSE, searcher="darwin")
    with pytest.raises(UserError, match="keeps no choice of its own"):
        pick_row(trials, front, "searcher", DENSE, searcher="random")
    with pytest.raises(UserError, match="got a Series"):
        pick_row(trials, front, trials.iloc[0], DENSE)
