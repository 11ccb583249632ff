"""An Optuna user's own study pruning the digits model through ``PruningObjective``."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from autoprune.integrations.optuna import PruningObjective, levels_of, uniform_params
from autoprune.integrations.pruning import Pruning, prepare_pruning


@pytest.fixture(scope="module")
def pruning() -> Pruning:
    return prepare_pruning(data="digits", budget=["flops=0.3"], fidelity=6, bn_batches=1, latency_repeats=0,
                           seed=2)


def test_a_tpe_study_prunes_within_budget_and_learns_the_evaluated_error(pruning: Pruning) -> None:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    study.optimize(PruningObjective(pruning=pruning), n_trials=6)
    limit = pruning.problem.constraints.limits["flops"]
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        levels = levels_of(trial)
        assert pruning.space.cost("flops", levels) <= limit
        assert trial.values == [pytest.approx(1.0 - trial.user_attrs["metrics"]["accuracy"])]
        assert trial.user_attrs["metrics"]["flops"] == pruning.space.cost("flops", levels)
        assert set(trial.params) == {f"level:{g}" for g in pruning.space.group_names}
        drawn = np.array([trial.params[f"level:{g}"] for g in pruning.space.group_names])
        over = pruning.space.cost("flops", drawn) > limit
        assert (trial.constraints["flops"] > 0) == over and trial.user_attrs["repaired"] == (not (levels == drawn).all())
    best = levels_of(study.best_trial)
    again = pruning.evaluate(best, fidelity=6)  # the same candidate, draw and steps: the same score
    assert 1.0 - again["accuracy"] == pytest.approx(study.best_value)


def test_a_study_started_at_uniform_pruning_evaluates_it_first(pruning: Pruning) -> None:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    params = uniform_params(pruning)
    study.enqueue_trial(params)
    study.optimize(PruningObjective(pruning=pruning, use_budget=False), n_trials=2)
    uniform = pruning.problem.least_pruning_uniform()
    assert study.trials[0].params == params
    assert levels_of(study.trials[0]).tolist() == uniform.tolist() and len(set(uniform.tolist())) == 1
    assert study.trials[1].params != params
    with pytest.raises(ValueError, match="prepare_pruning"):
        uniform_params(pruning.problem)  # type: ignore[arg-type]


def test_a_pruner_hears_held_out_error_as_retraining_proceeds(pruning: Pruning) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.optimize(PruningObjective(pruning=pruning, report_every=2, use_budget=False), n_trials=5)
    for trial in study.trials:
        assert trial.constraints == {}, "RandomSampler reads no constraints: none are set"
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert max(trial.intermediate_values) < 6
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert sorted(trial.intermediate_values) == [2, 4]


def test_a_multi_objective_study_gets_error_and_relative_flops(pruning: Pruning) -> None:
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=4))
    study.optimize(PruningObjective(pruning=pruning, objectives="error,flops", fidelity=2), n_trials=4)
    for trial in study.trials:
        metrics = trial.user_attrs["metrics"]
        assert trial.values == pytest.approx([1.0 - metrics["accuracy"], metrics["flops_ratio"]])
        assert metrics["steps"] == 2


@pytest.mark.parametrize(("options", "named"), [
    ({"objectives": ["flops"]}, "objectives"),
    ({"fidelity": -1}, "fidelity"),
    ({"report_every": 0}, "report_every"),
    ({"objectives": "error,flops", "report_every": 5}, "report_every"),
    ({"use_budget": 1}, "use_budget"),
])
def test_bad_options_are_refused_naming_them(pruning: Pruning, options: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PruningObjective(pruning=pruning, **options)


def test_an_over_budget_candidate_is_refused_by_evaluate(pruning: Pruning) -> None:
    with pytest.raises(ValueError, match="over budget"):
        pruning.evaluate(pruning.space.dense_candidate())
