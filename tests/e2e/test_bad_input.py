"""Bad input: one clear sentence on stderr, exit status 2, no traceback, no run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoprune.cli import main
from autoprune.searchers import SEARCHERS

BASE = ["search", "--trials", "2", "--fidelity", "2"]


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--budget", "memory=0.4"], "unknown key 'memory'"),
        (["--budget", "flops=0"], "must be positive"),
        (["--budget", "flops=-0.3"], "must be positive"),
        (["--budget", "latency=1.5"], "ratio must lie in (0, 1]"),
        (["--budget", "flops=20Q"], "unknown unit 'q'"),
        (["--budget", "flops"], "not of the form key=value"),
        (["--budget", "flops=0.0001"], "is unreachable"),
        (["--budget", "flops=0.4", "--budget", "flops=0.5"], "given twice"),
        (["--model", "resnet99"], "unknown model 'resnet99'; known models: digitnet"),
        (["--searcher", "annealing"], f"unknown searcher 'annealing'; known searchers: {', '.join(sorted(SEARCHERS))}"),
        (["--data", "cifar10", "--model", "resnet20", "--data-root", "/nonexistent/cifar"], "/nonexistent/cifar"),
        (["--data", "imagenet"], "unknown"),
        (["--model", "no_such_module_xyz:factory"], "could not be imported"),
        (["--trials", "0"], "trials must be"),
        (["--executor", "slurm"], "unknown executor 'slurm'"),
        (["--executor", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at --address '127.0.0.1:1'"),
        (["--searcher", "darwin", "--searcher-option", "offspring=0"], "offspring must be a whole number >= 1"),
        (["--config", "/nonexistent/config.yaml"], "does not exist"),
        (["--budget", "flops=abc"], "'abc' is not a number"),
        (["--budget", "flops=nan"], "'nan' is not a number"),
        (["--budget", "flops=1.5"], "is read as 1.5 MACs: ratios lie in (0, 1]"),
        (["--searcher", "darwin", "--searcher-option", "stage_steps=[10, 50"], "is not valid YAML"),
    ],
)
def test_bad_search_input(capsys, tmp_path: Path, extra: list[str], expected: str) -> None:
    run_dir = tmp_path / "run"
    code, err = _run(capsys, ["-q", *BASE, *extra, "--run-dir", str(run_dir)])
    assert code == 2
    assert err.startswith("autoprune: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not run_dir.exists(), "nothing half written"


@pytest.mark.parametrize(("extra", "expected"), [
    (["--searcher", "annealing"], "unknown searcher"),
    (["--searcher", "darwin", "--searcher-option", "patience=0"], "patience must be"),
    (["--searcher", "tyr", "--searcher-option", "no_such_option=1"], "has no options ['no_such_option']"),
    (["--budget", "flops=0.0001"], "is unreachable"),
    (["--budget", "params=10"], "is unreachable"),
    (["--space", "/nonexistent/space.yaml"], "does not exist"),
    pytest.param(["--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
    pytest.param(["--executor", "ray", "--gpus-per-worker", "1"], "torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
])
def test_mistakes_that_need_no_weights_are_refused_before_any_model_is_trained(
        capsys, monkeypatch, tmp_path: Path, extra: list[str], expected: str) -> None:
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(cache))  # no dense model: one would be trained first
    code, err = _run(capsys, ["-q", *BASE, *extra, "--run-dir", str(tmp_path / "run")])
    assert code == 2 and err.startswith("autoprune: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not cache.exists() or not any(cache.iterdir()), "refused before the dense model was trained"


def test_wrong_format_data_folder(capsys, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(b"\x00" * 100)
    code, err = _run(capsys, ["-q", *BASE, "--data", "cifar10", "--model", "resnet20", "--data-root", str(folder),
                              "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "Traceback" not in err and "data_batch_1.bin" in err


def test_checkpoint_that_does_not_match_the_model(capsys, tmp_path: Path) -> None:
    other = torch.nn.Linear(3, 4)
    path = tmp_path / "wrong.pt"
    torch.save(other.state_dict(), path)
    code, err = _run(capsys, ["-q", *BASE, "--checkpoint", str(path), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "does not match model 'digitnet'" in err
    assert not (tmp_path / "run").exists()


def test_pickled_checkpoint_is_refused(capsys, tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"weights": __import__("fractions").Fraction(1, 2)}, path)
    code, err = _run(capsys, ["-q", *BASE, "--checkpoint", str(path), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "weights-only" in err


def test_resume_on_a_folder_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    code, err = _run(capsys, ["-q", "search", "--resume", str(tmp_path)])
    assert code == 2 and "is not an autoprune run" in err


def test_run_directory_holding_another_run(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(["-q", *BASE, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in run_dir.iterdir())
    code, err = _run(capsys, ["-q", *BASE, "--budget", "flops=0.2", "--run-dir", str(run_dir)])
    assert code == 2 and "already holds a run" in err and "--resume" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_front_and_export_of_a_folder_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    assert _run(capsys, ["front", str(tmp_path)])[0] == 2
    code, err = _run(capsys, ["export", str(tmp_path / "missing")])
    assert code == 2 and "is not a folder" in err


def test_unparseable_pick(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(["-q", *BASE, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    code, err = _run(capsys, ["export", str(run_dir), "--pick", "fastest please"])
    assert code == 2 and "is not understood" in err
    code, err = _run(capsys, ["export", str(run_dir), "--pick", "99"])
    assert code == 2 and "no trial 99" in err


def test_no_traceback_from_the_console_script(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "autoprune.cli", "search", "--budget", "flops=2x"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_diverging_candidates_are_failed_trials_and_the_run_goes_on(capsys, tmp_path: Path) -> None:
    import autoprune

    run = autoprune.search(run_dir=tmp_path / "nan", trials=3, fidelity=5, bn_batches=1, lr=1e12, progress=False)
    trials = run.trials
    assert len(trials) == 3
    assert (trials["status"] == "failed").all()
    assert trials["error"].str.contains("diverged").all()
    assert run.front.empty


def test_run_directories_and_export_folders_that_cannot_be_written(capsys, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, err = _run(capsys, ["-q", *BASE, "--run-dir", str(a_file / "run")])
    assert code == 2 and "is a file, not a folder; choose another --run-dir" in err and err.count("\n") == 1
    run_dir = tmp_path / "run"
    assert main(["-q", *BASE, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    code, err = _run(capsys, ["-q", "export", str(run_dir), "--out", str(a_file / "export")])
    assert code == 2 and "choose another --out" in err and err.count("\n") == 1


def test_config_file_keys_as_the_flags_run_dir_included_and_no_key_twice(capsys, tmp_path: Path) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(f"trials: 2\nfidelity: 2\nsearcher-option: {{}}\nrun_dir: {tmp_path / 'from-config'}\n")
    assert main(["-q", "search", "--config", str(config)]) == 0
    assert (tmp_path / "from-config" / "run.json").is_file()
    config.write_text("trials: 2\ntrials: 3\n")
    code, err = _run(capsys, ["-q", "search", "--config", str(config), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "key 'trials' is given twice" in err


def test_resume_with_fewer_trials_than_the_run_has(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(["-q", *BASE, "--trials", "3", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    code, err = _run(capsys, ["-q", "search", "--resume", str(run_dir), "--trials", "2"])
    assert code == 2 and "already has 3 trials; give a larger total" in err


def test_an_interrupted_search_records_its_session_and_says_how_to_resume(capsys, monkeypatch, tmp_path: Path) -> None:
    import json

    import autoprune.executors.local as local

    real, calls = local.run_job, []

    def interrupted_on_the_third(evaluator, job):
        calls.append(job.trial_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(evaluator, job)

    monkeypatch.setattr(local, "run_job", interrupted_on_the_third)
    run_dir = tmp_path / "run"
    code, err = _run(capsys, ["-q", *BASE, "--trials", "5", "--run-dir", str(run_dir)])
    assert code == 130 and f"resume with: autoprune search --resume {run_dir}" in err
    (session,) = json.loads((run_dir / "run.json").read_text())["sessions"]
    assert session["stopped_by"] == "interrupted" and session["evaluated"] == 2


def test_an_interrupt_before_the_run_directory_exists_offers_no_resume(capsys, monkeypatch, tmp_path: Path) -> None:
    import autoprune.setup_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(autoprune.setup_run, "prepare", interrupted)  # as during a first-use dense training
    code, err = _run(capsys, ["-q", *BASE, "--run-dir", str(tmp_path / "run")])
    assert code == 130 and "interrupted" in err and "resume" not in err


def test_a_run_whose_trials_all_failed_says_why(capsys, tmp_path: Path) -> None:
    code = main(["-q", *BASE, "--lr", "1e12", "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0 and "the front is empty" in out
    assert "2 trials failed: " in out and "nan" in out


class _ClosedPipe:
    """A stdout whose reader has gone, as `autoprune front RUN | head` leaves it."""

    def __init__(self, stdout) -> None:
        self.stdout = stdout

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.stdout.fileno()


def test_quiet_after_the_command_and_a_closed_pipe(capsys, monkeypatch, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main([*BASE, "-q", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    with capsys.disabled():  # a real file descriptor under the closed pipe, as in a shell
        saved = os.dup(1)
        try:
            monkeypatch.setattr(sys, "stdout", _ClosedPipe(sys.__stdout__))
            assert main(["front", str(run_dir), "--all"]) == 0, "the reader's choice: no error"
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def test_a_space_file_overrides_the_familys_defaults_key_by_key_and_names_real_layers(
        capsys, monkeypatch, tmp_path: Path) -> None:
    from autoprune.space.config import load_space_config

    partial = tmp_path / "partial.yaml"
    partial.write_text("level_step: 0.125\n")
    config = load_space_config("mobilenetv2", partial)
    default = load_space_config("no-such-family")  # default.yaml
    assert (config.grid.round_to, config.grid.min_channels) == (2, 4)
    assert (default.grid.round_to, default.grid.min_channels) == (1, 2), "the family's values are told apart"
    assert config.grid.keep_ratios[1] == 0.875
    typo = tmp_path / "typo.yaml"
    typo.write_text("never_prune: [stem.conv, 'no_such_layer*']\n")
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(cache))
    code, err = _run(capsys, ["-q", *BASE, "--space", str(typo), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and err.count("\n") == 1
    assert "never_prune patterns ['stem.conv', 'no_such_layer*'] match no layer of digitnet" in err
    assert not cache.exists() or not any(cache.iterdir()), "refused before the dense model was trained"
    zero = tmp_path / "zero.yaml"
    zero.write_text("level_step: 0\n")
    code, err = _run(capsys, ["-q", *BASE, "--space", str(zero), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and f"search-space file {str(zero)!r}: level step must be in (0, 1)" in err
