"""The presence term and denominator of the cost form, and old run.json spaces loading."""

from __future__ import annotations

import numpy as np

from autoprune.space.cost import QuadraticCost


def test_presence_counts_only_groups_that_keep_something() -> None:
    cost = QuadraticCost(n_groups=2, constant=5, linear=np.array([2, 3]))
    cost.add_presence(0, 100)
    cost.add_presence(1, 7)
    kept = np.array([[4, 1], [0, 1], [4, 0], [0, 0]])
    assert cost(kept).tolist() == [5 + 8 + 3 + 107, 5 + 3 + 7, 5 + 8 + 100, 5]


def test_denominator_divides_exactly() -> None:
    # a key/value head shared by 3 query heads: 8 params per kv head = 8/3 per query head
    cost = QuadraticCost(n_groups=1, linear=np.array([8]), denominator=3)
    assert cost(np.array([[3], [6], [0]])).tolist() == [8, 16, 0]


def test_round_trip_and_old_dicts() -> None:
    cost = QuadraticCost(n_groups=2, constant=3, linear=np.array([1, 2]), presence=np.array([0, 9]), denominator=2)
    again = QuadraticCost.from_dict(cost.to_dict())
    kept = np.array([[0, 0], [2, 4], [6, 0]])
    assert np.array_equal(cost(kept), again(kept))
    old = {"n_groups": 2, "constant": 3, "linear": [1, 2], "quadratic": [[0, 1, 4]]}  # written before presence
    loaded = QuadraticCost.from_dict(old)
    assert loaded.to_dict() == old  # unchanged serialised form without presence or denominator
    assert loaded(np.array([2, 3])) == 3 + 2 + 6 + 4 * 2 * 3
