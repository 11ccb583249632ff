"""``darwin`` and ``tyr`` end to end through the CLI on the digits task: stages, draws,
checkpoints, the searcher's own pick, export, and a resume that matches an uninterrupted run.

Their stages are shrunk (4 offspring, two stages; darwin on 2 draws of its own per
generation) so that a generation is 11 trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.cli import main

COMMON = ["-q", "search", "--budget", "flops=0.3", "--bn-batches", "1", "--seed", "1"]
DARWIN = ["--searcher", "darwin", "--searcher-option", "offspring=4", "--searcher-option", "survivors=[2, 1]",
          "--searcher-option", "stage_steps=[3, 8]", "--searcher-option", "stage_samples=[64, 128]",
          "--searcher-option", "fresh_draws=true", "--searcher-option", "final_draws=2"]
TYR = ["--searcher", "tyr", "--searcher-option", "offspring=4", "--searcher-option", "survivors=[2, 1]",
       "--searcher-option", "stage_samples=[64, 128]", "--searcher-option", "rounds=2",
       "--searcher-option", "generations_per_round=2"]


def _journal(path: Path) -> list[dict]:
    lines = (path / "trials.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["trial_id"])


@pytest.fixture(scope="module")
def darwin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "darwin"
    assert main([*COMMON, *DARWIN, "--trials", "22", "--run-dir", str(path)]) == 0
    return path


def test_darwin_runs_its_stages_on_draws_of_each_generation(darwin_run: Path) -> None:
    info = json.loads((darwin_run / "run.json").read_text())
    records = _journal(darwin_run)
    assert len(records) == 22 and all(r["status"] == "ok" for r in records)
    assert all(r["metrics"]["flops"] <= 0.3 * info["dense"]["flops"] for r in records)
    # 4 offspring + the parent, then 2 finalists + the parent on each of the generation's 2 draws
    assert [r["draw"] for r in records] == [0] * 8 + [1] * 3 + [2] * 8 + [3] * 3
    assert {r["metrics"]["total_steps"] for r in records} == {3, 8}
    continued = [r for r in records if r["parent"] is not None]
    assert continued and all(r["fidelity"] == 5 for r in continued), "survivors train only the difference"
    # only the weights a later trial may continue stay: the searcher's parent and the trial it continued
    chosen = next(r for r in records if r["trial_id"] == info["incumbent"])
    assert {p.stem for p in (darwin_run / "checkpoints").iterdir()} == {f"trial-{chosen['trial_id']}",
                                                                        f"trial-{chosen['parent']}"}
    finalists: dict[str, list[dict]] = {}
    for r in records[11:]:
        if r["eval_samples"] == 128:
            finalists.setdefault(str(r["levels"]), []).append(r)
    best = min(finalists.values(), key=lambda rs: sum(r["metrics"]["loss"] for r in rs))
    assert len(best) == 2 and info["incumbent"] == next(r["trial_id"] for r in best if r["draw"] == 2)


def test_the_summary_says_when_the_searchers_choice_was_found(darwin_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["-q", "search", "--resume", str(darwin_run)]) == 0  # all replayed: the summary again
    chosen = json.loads((darwin_run / "run.json").read_text())["incumbent"]
    out = capsys.readouterr().out
    assert f"the searcher's choice: trial {chosen}, found {22 - 1 - chosen} trials before the end" in out


@pytest.mark.parametrize("pick", [["--pick", "searcher"], []], ids=["searcher", "default"])
def test_darwin_exports_its_own_choice(darwin_run: Path, tmp_path: Path, pick: list[str]) -> None:
    info = json.loads((darwin_run / "run.json").read_text())
    out = tmp_path / "chosen"
    assert main(["-q", "export", str(darwin_run), *pick, "--out", str(out), "--steps", "10"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["trial_id"] == info["incumbent"]
    assert 0.0 <= recipe["metrics"]["test_accuracy"] <= 1.0


def test_darwin_resumed_mid_generation_matches_an_uninterrupted_run(darwin_run: Path, tmp_path: Path) -> None:
    short = tmp_path / "short"
    assert main([*COMMON, *DARWIN, "--trials", "15", "--run-dir", str(short)]) == 0  # inside generation 1
    assert main(["-q", "search", "--resume", str(short), "--trials", "22"]) == 0
    fields = lambda r: (r["levels"], r["fidelity"], r["eval_samples"], r["parent"], r["draw"])  # noqa: E731
    assert [fields(r) for r in _journal(short)] == [fields(r) for r in _journal(darwin_run)]
    assert json.loads((short / "run.json").read_text())["incumbent"] == \
        json.loads((darwin_run / "run.json").read_text())["incumbent"]


def test_tyr_scores_without_retraining_and_keeps_its_choice(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "tyr"
    assert main([*COMMON, *TYR, "--trials", "40", "--run-dir", str(run_dir)]) == 0
    info = json.loads((run_dir / "run.json").read_text())
    records = _journal(run_dir)
    assert info["sessions"][-1]["stopped_by"] in ("searcher finished", "trial budget")
    assert all(r["status"] == "ok" and r["fidelity"] == 0 for r in records)
    assert all(r["metrics"]["flops"] <= 0.3 * info["dense"]["flops"] for r in records)
    assert {r["eval_samples"] for r in records} == {64, 128}
    last = [r for r in records if r["eval_samples"] == 128]
    assert info["incumbent"] in {r["trial_id"] for r in last}


def test_pick_searcher_on_a_run_whose_searcher_has_no_choice(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "random"
    assert main([*COMMON, "--trials", "2", "--fidelity", "5", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["export", str(run_dir), "--pick", "searcher"]) == 2
    err = capsys.readouterr().err
    assert "keeps no choice of its own" in err and len(err.strip().splitlines()) == 1
    assert not list(run_dir.glob("export-*"))


def test_tyr_with_retraining_stages_continues_its_survivors(tmp_path: Path) -> None:
    run_dir = tmp_path / "tyr-trained"
    assert main([*COMMON, *TYR, "--searcher-option", "stage_steps=[3, 8]", "--trials", "12",
                 "--run-dir", str(run_dir)]) == 0
    records = _journal(run_dir)
    assert len(records) == 12 and all(r["status"] == "ok" for r in records)
    assert {r["metrics"]["total_steps"]: r["eval_samples"] for r in records} == {3: 64, 8: 128}
    continued = [r for r in records if r["parent"] is not None]
    assert continued and all(r["fidelity"] == 5 for r in continued), "survivors train only the difference"
    kept = {p.stem for p in (run_dir / "checkpoints").iterdir()}
    assert 0 < len(kept) < len(records) // 2, "the weights no later trial continues are deleted"
