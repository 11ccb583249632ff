"""A small pruning search through a real ``tune.Tuner`` on a local Ray: autoprune's
``random`` searcher suggesting, the evaluator as the trainable reporting held-out
accuracy every 2 steps, ASHA stopping poor candidates, and the results imported into a
run directory that ``front`` and ``export`` read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoprune.api import open_run
from autoprune.cli import main
from autoprune.integrations.pruning import Pruning, prepare_pruning

pytestmark = pytest.mark.ray

FIDELITY = 8
TRIALS = 8


@pytest.fixture(scope="module")
def pruning() -> Pruning:
    return prepare_pruning(data="digits", budget=["flops=0.3"], fidelity=FIDELITY, bn_batches=1, latency_repeats=0,
                           seed=5)


@pytest.fixture(scope="module")
def tuned(ray_instance, pruning: Pruning, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from autoprune.integrations.tune import AutopruneSearch, make_trainable

    search = AutopruneSearch.create("random", pruning=pruning)
    scheduler = ASHAScheduler(time_attr="steps", max_t=FIDELITY, grace_period=2, reduction_factor=2)
    tuner = tune.Tuner(
        make_trainable(pruning, report_every=2),
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=TRIALS, metric="accuracy",
                                    mode="max", max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path_factory.mktemp("tune")), name="digits", verbose=0),
    )
    return search, tuner.fit(), tmp_path_factory.mktemp("runs") / "imported"


def test_tune_runs_every_suggestion_and_asha_stops_some_early(tuned, pruning: Pruning) -> None:  # noqa: ANN001
    search, results, _ = tuned
    assert len(results) == TRIALS and results.num_errors == 0
    frame = results.get_dataframe()
    assert {"accuracy", "loss", "steps", "flops_ratio", "autoprune_trial"} <= set(frame.columns)
    limit = pruning.problem.constraints.limits["flops"]
    assert all(pruning.space.cost("flops", np.array(r.config["levels"])) <= limit for r in results)
    steps = sorted(int(r.metrics["steps"]) for r in results)
    assert steps[-1] == FIDELITY and steps[0] < FIDELITY, f"ASHA stopped none early: {steps}"
    for r in results:  # held-out metrics were reported as retraining went, every 2 steps
        history = r.metrics_dataframe["steps"].tolist()
        assert history == list(range(2, int(r.metrics["steps"]) + 1, 2)) or history[-1] == FIDELITY
    assert search.wrapped.n_told == TRIALS == len(search.results)
    assert all("loss" in r.metrics and "flops" in r.metrics for r in search.results.values()), "told what was scored"
    assert sorted(search.results) == sorted(int(r.config["autoprune_trial"]) for r in results)


def test_imported_results_give_a_front_and_export(tuned, pruning: Pruning, tmp_path: Path,  # noqa: ANN001
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from autoprune.integrations.tune import import_results

    search, results, run_dir = tuned
    if not run_dir.exists():
        import_results(results, pruning=pruning, run_dir=run_dir, search=search)
    run = open_run(run_dir)
    assert run.config.searcher == "random" and len(run.trials) == TRIALS
    full = run.trials[run.trials["fidelity"] == FIDELITY]
    early = run.trials[run.trials["fidelity"] < FIDELITY]
    assert len(early) >= 1 and len(full) >= 1
    front = run.front
    assert not front.empty and set(front["fidelity"]) == {FIDELITY}, "only fully retrained trials compete"
    best = max(r.metrics["accuracy"] for r in results if int(r.metrics["steps"]) == FIDELITY)
    assert front["accuracy"].max() == pytest.approx(best)
    capsys.readouterr()
    assert main(["front", str(run_dir)]) == 0
    assert str(front["trial_id"].iloc[0]) in capsys.readouterr().out
    out = tmp_path / "model"
    assert main(["-q", "export", str(run_dir), "--out", str(out), "--steps", "2"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["trial_id"] in set(front["trial_id"])


def test_importing_nothing_is_one_sentence(pruning: Pruning, tmp_path: Path) -> None:
    from autoprune.errors import UserError
    from autoprune.integrations.tune import import_results

    with pytest.raises(UserError, match="nothing to import"):
        import_results([], pruning=pruning, run_dir=tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


@pytest.mark.slow
def test_darwin_through_tune_continues_parents_and_matches_the_run_loop(ray_instance, tmp_path: Path) -> None:  # noqa: ANN001
    """A searcher whose survivors continue their parents' training, through Tune, proposes
    and scores exactly what ``autoprune search`` does with the same seed."""
    from ray import tune

    from autoprune.api import search as autoprune_search
    from autoprune.integrations.tune import AutopruneSearch, import_results, make_trainable

    options = {"offspring": 4, "survivors": [2, 1], "stage_steps": [3, 8], "stage_samples": [64, 128]}
    common = {"data": "digits", "budget": ["flops=0.3"], "fidelity": 8, "bn_batches": 1, "latency_repeats": 0,
              "seed": 1, "threads": 1}
    pruning = prepare_pruning(**common)
    search = AutopruneSearch.create("darwin", pruning=pruning, options=options)
    tuner = tune.Tuner(make_trainable(pruning), tune_config=tune.TuneConfig(
        search_alg=search, num_samples=12, metric="accuracy", mode="max", max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="darwin", verbose=0))
    imported = import_results(tuner.fit(), pruning=pruning, run_dir=tmp_path / "imported", search=search)
    local = autoprune_search(run_dir=tmp_path / "local", searcher="darwin", searcher_options=options, trials=12,
                             progress=False, **common)
    columns = ["trial_id", "fidelity", "eval_samples", "accuracy", "loss"] + [c for c in local.trials if
                                                                             c.startswith("level:")]
    assert (imported.trials["fidelity"] == 5).any(), "survivors continued their parents"
    assert imported.trials[columns].equals(local.trials[columns])
    assert imported.info["searcher"]["offspring"] == 4
