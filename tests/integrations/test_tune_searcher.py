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


class _Tune:
    """Plays Tune's part step by step: suggest while trials are left, else complete the
    oldest pending trial; ``pending`` survives an interruption, as Tune re-runs its
    unfinished trials after ``Tuner.restore``."""

    def __init__(self, case: Any, trials: int) -> None:
        self.case, self.trials = case, trials
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.configs: list[dict[str, Any]] = []

    def run(self, search: AutopruneSearch, *, completions: int | None = None) -> None:
        done = 0
        while len(self.configs) < self.trials or self.pending:
            if completions is not None and done >= completions:
                return
            config = search.suggest(f"tune-{len(self.configs)}") if len(self.configs) < self.trials else None
            if isinstance(config, dict):
                self.configs.append(config)
                self.pending.append((f"tune-{len(self.configs) - 1}", config))
                continue
            if config == search.FINISHED and not self.pending:
                return
            tune_id, config = self.pending.pop(0)
            search.on_trial_complete(tune_id, _reported(self.case, config))
            done += 1


def _fingerprint(configs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["autoprune_trial"], tuple(c["levels"]), c["fidelity"], c["parent"], c["kind"]) for c in configs]


@pytest.mark.parametrize(("name", "options", "stop_after"), [
    ("darwin", {"offspring": 4, "survivors": [2, 1], "stage_steps": [3, 8], "stage_samples": [64, 128]}, 7),
    ("darwin", {"offspring": 4, "survivors": [2, 1], "stage_steps": [3, 8], "stage_samples": [64, 128]}, 13),
    ("dp", {"rounds": 2, "additivity_checks": 2}, 23),
])
def test_a_restored_search_continues_as_if_never_interrupted(name: str, options: dict[str, Any], stop_after: int,
                                                             tmp_path: Any) -> None:
    case = build_case("chain-flops0.4-params0.3")

    def fresh() -> AutopruneSearch:
        return AutopruneSearch(make_searcher(name, problem=case.problem, seed=3, options=options), fidelity=8, seed=3)

    whole, whole_search = _Tune(case, 40), fresh()
    whole.run(whole_search)
    interrupted = _Tune(case, 40)
    first = fresh()
    interrupted.run(first, completions=stop_after)
    assert interrupted.pending, "interrupted with trials in flight"
    first.save(str(tmp_path / "state.json"))
    second = fresh()
    second.restore(str(tmp_path / "state.json"))
    interrupted.run(second)
    assert _fingerprint(interrupted.configs) == _fingerprint(whole.configs)
    assert sorted(second.results) == sorted(c["autoprune_trial"] for c in whole.configs), "each trial told once"
    assert second.wrapped.n_told == whole_search.wrapped.n_told


def test_restore_refuses_another_search_and_unreadable_state(tmp_path: Any) -> None:
    from autoprune.errors import UserError

    case = build_case("separable-flops0.4")
    search = AutopruneSearch(make_searcher("random", problem=case.problem, seed=0), fidelity=8, seed=0)
    _Tune(case, 4).run(search, completions=2)
    path = tmp_path / "state.json"
    search.save(str(path))
    other = AutopruneSearch(make_searcher("random", problem=case.problem, seed=1), fidelity=8, seed=1)
    with pytest.raises(UserError, match="restore the experiment with the search it was started with"):
        other.restore(str(path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        AutopruneSearch(make_searcher("random", problem=case.problem, seed=0), fidelity=8, seed=0).restore(
            str(tmp_path / "bad.json"))
    with pytest.raises(RuntimeError, match="not suggested anything"):
        search.restore(str(path))
