"""``AutopruneSearch`` without a Tune run: the run loop's batch semantics, whatever order
Tune's trials complete in (Tune calls ``suggest`` and ``on_trial_complete`` as here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray.tune")

from autoprune.integrations.tune import AutopruneSearch  # noqa: E402
from autoprune.searchers import make_searcher  # noqa: E402
from autoprune.testing.driver import drive  # noqa: E402
from autoprune.testing.searcher_suite import build_case  # noqa: E402


def _reported(case: Any, config: dict[str, Any], *, final: bool = True) -> dict[str, Any]:
    """What Tune hands a searcher: the trial's last report, flattened."""
    accuracy = float(case.quality.accuracy(np.array(config["levels"])))
    return {"accuracy": accuracy, "autoprune/accuracy": accuracy, "autoprune/loss": 1.0 - accuracy,
            "autoprune/steps": config["fidelity"], "autoprune_final": final, "training_iteration": 3}


def _run(search: AutopruneSearch, case: Any, trials: int, *, reverse: bool, fail: set[int] = frozenset()) -> list:
    """Suggest until ``trials`` are out, completing the pending ones (newest first when
    ``reverse``) whenever the searcher waits; returns the configs in suggestion order."""
    configs, pending, n = [], [], 0
    while n < trials or pending:
        config = search.suggest(f"tune-{n}") if n < trials else None
        if isinstance(config, dict):
            configs.append(config)
            pending.append((f"tune-{n}", config))
            n += 1
            continue
        if config == search.FINISHED and not pending:
            break
        tune_id, done = pending.pop(-1 if reverse else 0)
        if done["autoprune_trial"] in fail:
            search.on_trial_complete(tune_id, None, error=True)
        else:
            search.on_trial_complete(tune_id, _reported(case, done))
    return configs


@pytest.mark.parametrize("name", ["random", "darwin"])
def test_completion_order_does_not_change_what_is_proposed(name: str) -> None:
    case = build_case("chain-flops0.4-params0.3")
    options = ({"offspring": 4, "survivors": [2, 1], "stage_steps": [3, 8], "stage_samples": [64, 128]}
               if name == "darwin" else {})
    runs = []
    for reverse in (False, True):
        search = AutopruneSearch(make_searcher(name, problem=case.problem, seed=3, options=options), fidelity=8,
                                 seed=3)
        runs.append([(c["levels"], c["fidelity"], c["parent"]) for c in _run(search, case, 24, reverse=reverse)])
    assert runs[0] == runs[1]
    # and they are what the searcher proposes when driven in turn, less repeats (which the
    # run loop, like the adapter, answers from memory instead of evaluating again)
    plain = drive(make_searcher(name, problem=case.problem, seed=3, options=options), case.quality, max_proposals=48)
    distinct = list(dict.fromkeys((tuple(p.levels.tolist()), 8 if p.fidelity is None else p.fidelity, p.parent)
                                  for p in plain.proposals))
    assert [(tuple(c[0]), c[1], c[2]) for c in runs[0]] == distinct[:24]


def test_failed_trials_are_told_failed_and_metrics_come_from_the_flattened_report() -> None:
    case = build_case("separable-flops0.4")
    searcher = make_searcher("random", problem=case.problem, seed=0)
    search = AutopruneSearch(searcher, fidelity=8, seed=0)
    _run(search, case, 8, reverse=False, fail={2, 5})
    assert searcher.n_told == 8
    assert [t for t, r in sorted(search.results.items()) if not r.ok] == [2, 5]
    ok = search.results[0]
    assert ok.metrics["loss"] == pytest.approx(1.0 - ok.metrics["accuracy"]) and "training_iteration" not in ok.metrics
    assert "stopped_early" not in ok.metrics


def test_a_finished_searcher_finishes_the_tune_run() -> None:
    case = build_case("separable-flops0.4")
    search = AutopruneSearch(make_searcher("uniform", problem=case.problem, seed=0), fidelity=8, seed=0)
    configs = _run(search, case, 5, reverse=False)
    assert len(configs) == 1 and search.suggest("tune-later") == search.FINISHED


def test_a_trial_stopped_early_is_told_with_what_it_last_reported() -> None:
    case = build_case("separable-flops0.4")
    search = AutopruneSearch(make_searcher("random", problem=case.problem, seed=0), fidelity=8, seed=0)
    config = search.suggest("a")
    assert isinstance(config, dict)
    search.on_trial_complete("a", {**_reported(case, config, final=False), "autoprune/steps": 2})
    result = search.results[config["autoprune_trial"]]
    assert result.ok and result.metrics["stopped_early"] == 1.0 and result.metrics["steps"] == 2


@pytest.mark.parametrize(("kwargs", "named"), [({"fidelity": -1}, "fidelity"), ({"fidelity": 1.5}, "fidelity")])
def test_bad_arguments_are_refused(kwargs: dict[str, Any], named: str) -> None:
    case = build_case("separable-flops0.4")
    with pytest.raises(ValueError, match=named):
        AutopruneSearch(make_searcher("random", problem=case.problem, seed=0), seed=0, **kwargs)
    with pytest.raises(ValueError, match="searcher"):
        AutopruneSearch("random", fidelity=8, seed=0)  # type: ignore[arg-type]
