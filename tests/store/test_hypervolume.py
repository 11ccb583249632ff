"""The front's hypervolume up to its fixed reference point: the dense model's error plus a
margin, and the dense model's costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoprune.store.front import describe_reference, hypervolume, reference_point
from autoprune.store.quality import ACCURACY, PERPLEXITY

DENSE = {"accuracy": 0.9, "flops": 1000.0, "params": 200.0}


def _front(rows: list[tuple[float, float, float]], metric: str = "accuracy") -> pd.DataFrame:
    return pd.DataFrame([{metric: q, "flops": f, "params": p, "latency_ms": np.nan} for q, f, p in rows])


def test_the_reference_is_the_dense_error_plus_the_margin_and_the_dense_costs() -> None:
    front = _front([(0.8, 500.0, 100.0)])
    assert reference_point(front, DENSE) == {"error": pytest.approx(0.1 + 0.25), "FLOPs": 1.0, "params": 1.0}
    # (0.35 - 0.2) x (1 - 0.5) x (1 - 0.5), by hand
    assert hypervolume(front, DENSE) == pytest.approx(0.15 * 0.5 * 0.5)


def test_a_member_further_from_dense_than_the_margin_adds_nothing() -> None:
    kept = _front([(0.8, 500.0, 100.0)])
    lost = _front([(0.8, 500.0, 100.0), (0.6, 100.0, 20.0)])  # 30 points below dense: past the margin
    assert hypervolume(lost, DENSE) == pytest.approx(hypervolume(kept, DENSE))


def test_latency_joins_with_the_dense_latency_as_its_reference() -> None:
    front = _front([(0.8, 500.0, 100.0)])
    front["latency_ms"] = 2.0
    dense = {**DENSE, "latency_ms": 4.0}
    assert reference_point(front, dense)["latency"] == 1.0
    assert hypervolume(front, dense) == pytest.approx(0.15 * 0.5 * 0.5 * 0.5)
    assert hypervolume(front.assign(latency_ms=5.0), dense) == 0.0, "slower than dense adds nothing"


def test_perplexity_counts_up_to_twice_the_dense_models() -> None:
    dense = {"perplexity": 10.0, "flops": 1000.0, "params": 200.0}
    front = _front([(15.0, 500.0, 100.0)], metric="perplexity")
    reference = reference_point(front, dense, PERPLEXITY)
    assert reference["error"] == pytest.approx(0.5)
    # error 1 - 10 / 15 = 1/3, up to 0.5
    assert hypervolume(front, dense, PERPLEXITY) == pytest.approx((0.5 - 1 / 3) * 0.25)
    assert hypervolume(_front([(25.0, 100.0, 20.0)], metric="perplexity"), dense, PERPLEXITY) == 0.0


def test_the_reference_in_words_names_the_dense_error_and_the_margin() -> None:
    front = _front([(0.8, 500.0, 100.0)])
    words = describe_reference(reference_point(front, DENSE), DENSE, ACCURACY)
    assert words == "error 0.3500 (the dense model's 0.1000 + 0.25); FLOPs, params 1.0 (the dense model's)"
