"""``--searcher optuna`` end to end through the CLI on the digits task: TPE past its
start-up draws, the study in the run directory, export, a resume mid-batch that matches
an uninterrupted run, and a bad sampler refused."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from autoprune.cli import main
from autoprune.searchers.optuna_sampler import STUDY_FILE, STUDY_NAME

COMMON = ["-q", "search", "--budget", "flops=0.3", "--bn-batches", "1", "--seed", "3", "--fidelity", "3",
          "--searcher", "optuna", "--searcher-option", "sampler=tpe", "--searcher-option", "n_startup_trials=4"]
TRIALS = 14  # batches of 8: the resume below starts inside the second


def _journal(path: Path) -> list[dict]:
    lines = (path / "trials.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["trial_id"])


def _study(path: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path / STUDY_FILE)))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


@pytest.fixture(scope="module")
def tpe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "tpe"
    assert main([*COMMON, "--trials", str(TRIALS), "--run-dir", str(path)]) == 0
    return path


def test_tpe_search_stays_in_budget_and_keeps_its_study(tpe_run: Path) -> None:
    info = json.loads((tpe_run / "run.json").read_text())
    assert info["searcher"]["sampler"] == "tpe" and info["searcher"]["objectives"] == ["error"]
    records = _journal(tpe_run)
    assert len(records) == TRIALS and all(r["status"] == "ok" for r in records)
    assert all(r["metrics"]["flops"] <= info["limits"]["flops"] for r in records)
    study = _study(tpe_run)
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "repaired" not in t.user_attrs]
    assert len(told) == TRIALS
    by_id = {r["trial_id"]: r for r in records}
    for t in told:  # each draw holds the error of the candidate evaluated for it
        assert t.values == [pytest.approx(1.0 - by_id[t.user_attrs["autoprune_trial"]]["metrics"]["accuracy"])]


def test_the_front_exports(tpe_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["-q", "export", str(tpe_run), "--out", str(out), "--steps", "2"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["trial_id"] in {r["trial_id"] for r in _journal(tpe_run)}


def test_resumed_mid_batch_matches_an_uninterrupted_run(tpe_run: Path, tmp_path: Path) -> None:
    short = tmp_path / "short"
    assert main([*COMMON, "--trials", "11", "--run-dir", str(short)]) == 0
    assert main(["-q", "search", "--resume", str(short), "--trials", str(TRIALS)]) == 0
    fields = lambda r: (r["levels"], r["fidelity"], r["draw"])  # noqa: E731
    assert [fields(r) for r in _journal(short)] == [fields(r) for r in _journal(tpe_run)]
    resumed, whole = _study(short), _study(tpe_run)
    done = lambda s: [(t.params, t.values) for t in s.trials if t.state.is_finished()]  # noqa: E731
    assert done(resumed) == done(whole), "the replayed study is the uninterrupted one"


def test_an_unknown_sampler_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "bad"
    code = main(["-q", "search", "--searcher", "optuna", "--searcher-option", "sampler=hyperband",
                 "--trials", "2", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sampler must be one of tpe, nsga2" in err, err
    assert not run_dir.exists()
