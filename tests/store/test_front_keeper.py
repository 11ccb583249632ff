"""The front kept trial by trial equals the front computed from the whole journal, whatever
arrives: failures, over-budget trials, later stages, candidates scored on several draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autoprune.store.front import objectives_for, pareto_front, trials_table
from autoprune.store.front_keeper import FrontKeeper
from autoprune.store.quality import ACCURACY

GROUPS = ["a", "b", "c"]
LIMITS = {"flops": 60.0}


def _records(n: int, seed: int, *, latency: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for trial_id in range(n):
        if records and rng.random() < 0.15:  # a candidate scored again, on another draw
            earlier = records[int(rng.integers(len(records)))]
            levels, fidelity, samples = earlier["levels"], earlier["fidelity"], earlier["eval_samples"]
        else:
            levels = [int(v) for v in rng.integers(0, 4, size=3)]
            # stages: most trials early, later stages arrive as the run goes
            stage = int(rng.choice(3, p=[0.6, 0.3, 0.1])) if trial_id > n // 3 else 0
            fidelity, samples = [(10, 64), (20, 128), (40, None)][stage]
        flops = float(100 - 10 * sum(levels) + rng.integers(0, 5))
        failed = rng.random() < 0.1
        metrics = None if failed else {
            "accuracy": float(np.round(rng.random(), 2)),  # rounded: ties happen
            "flops": flops, "params": float(50 - 5 * levels[0] - 3 * levels[1]),
            "flops_ratio": flops / 100, "params_ratio": 0.5, "loss": 1.0,
            **({"latency_ms": float(np.round(rng.random(), 1))} if latency else {}),
        }
        records.append({"trial_id": trial_id, "levels": levels, "fidelity": fidelity, "status":
                        "failed" if failed else "ok", "metrics": metrics, "error": "boom" if failed else None,
                        "eval_samples": samples, "parent": None, "draw": int(rng.integers(0, 3))})
    return records


def _same(kept: pd.DataFrame, full: pd.DataFrame) -> None:
    assert sorted(kept["trial_id"]) == sorted(full["trial_id"]) if not full.empty else kept.empty
    if not full.empty:
        a = kept.sort_values("trial_id").reset_index(drop=True)
        b = full.sort_values("trial_id").reset_index(drop=True)
        assert list(a.columns) == list(b.columns)
        for column in ("accuracy", "flops", "params", "latency_ms", "draws"):
            np.testing.assert_allclose(a[column].astype(float), b[column].astype(float))


@pytest.mark.parametrize("latency", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_kept_front_equals_the_front_of_the_whole_journal_after_every_trial(
        tmp_path: Path, seed: int, latency: bool) -> None:
    records = _records(120, seed, latency=latency)
    objectives = objectives_for(ACCURACY)
    keeper = FrontKeeper(path=tmp_path, group_names=GROUPS, limits=LIMITS, latency_model=None, objectives=objectives)
    for n, record in enumerate(records, start=1):
        keeper.add(record)
        if n % 2 and n < 100:
            continue  # every other trial, and every one at the end, keeps the test quick
        full = pareto_front(trials_table(records[:n], GROUPS, LIMITS), objectives)
        _same(keeper.front, full)
    on_disk = pd.read_csv(tmp_path / "front.csv")
    assert sorted(on_disk["trial_id"]) == sorted(keeper.front["trial_id"])
    # a resumed run starts from the journal it finds
    resumed = FrontKeeper(path=tmp_path, group_names=GROUPS, limits=LIMITS, latency_model=None,
                          objectives=objectives, records=records)
    _same(resumed.front, pareto_front(trials_table(records, GROUPS, LIMITS), objectives))
