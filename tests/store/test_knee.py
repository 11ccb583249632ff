"""The knee of a front (``--pick knee``): the member farthest below the chord of the staircase."""

from __future__ import annotations

import pandas as pd
import pytest

from autoprune.errors import UserError
from autoprune.knee import knee_row, staircase
from autoprune.pick import pick_row
from autoprune.store.quality import ACCURACY, PERPLEXITY

DENSE = {"flops": 100.0, "params": 100.0}


def _front(flops: list[float], quality: list[float], metric: str = "accuracy") -> pd.DataFrame:
    return pd.DataFrame({"trial_id": range(len(flops)), "status": "ok", "flops": flops, metric: quality,
                         "params": [10.0] * len(flops), "latency_ms": [1.0] * len(flops)})


def test_the_knee_is_where_accuracy_stops_paying_for_flops() -> None:
    # accuracy climbs steeply up to 30 FLOPs, then barely: the bend is at 30
    front = _front([10, 20, 30, 60, 100], [0.50, 0.80, 0.90, 0.92, 0.93])
    assert knee_row(front, ACCURACY)["trial_id"] == 2
    assert pick_row(front, front, "knee", DENSE)["trial_id"] == 2
    assert pick_row(front, front, "knee, flops<=0.25", DENSE)["trial_id"] == 1, "the knee of what meets the bound"


def test_perplexity_bends_the_other_way_up() -> None:
    front = _front([10, 20, 30, 60, 100], [80.0, 30.0, 20.0, 19.0, 18.5], metric="perplexity")
    assert knee_row(front, PERPLEXITY)["trial_id"] == 2


def test_no_bend_means_the_best_quality() -> None:
    straight = _front([10, 20, 30], [0.5, 0.6, 0.7])
    assert knee_row(straight, ACCURACY)["trial_id"] == 2
    concave = _front([10, 20, 30], [0.5, 0.55, 0.9])
    assert knee_row(concave, ACCURACY)["trial_id"] == 2
    assert knee_row(_front([10, 20], [0.5, 0.9]), ACCURACY)["trial_id"] == 1


def test_members_beaten_in_quality_and_flops_are_off_the_staircase() -> None:
    # trial 1 is on the 4-objective front (say, by latency) but worse and dearer than trial 0
    front = _front([10, 20, 30, 60], [0.80, 0.70, 0.90, 0.91])
    assert staircase(front, ACCURACY)["trial_id"].tolist() == [0, 2, 3]


def test_knee_and_best_are_not_given_together() -> None:
    front = _front([10, 20, 30], [0.5, 0.8, 0.9])
    with pytest.raises(UserError, match="knee and best= each choose the member"):
        pick_row(front, front, "knee,best=flops", DENSE)
