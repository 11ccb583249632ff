"""Budgets and --pick bounds that are no usable number (nan, inf, overflowing, zero,
negative, an accuracy outside [0, 1]) are refused in one sentence quoting them, before
anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli

from autoprune.cli import main

SEARCH = ["search", "--trials", "1", "--fidelity", "1"]


@pytest.mark.parametrize("budget, said", [
    ("flops=nan", "is not a number"), ("flops=inf", "is not a number"), ("params=-inf", "is not a number"),
    ("flops=1e400", "too large to be a finite number"), ("params=1e300T", "too large to be a finite number"),
    ("latency=1e306s", "too large to be a finite number"), ("flops=0", "must be positive"),
    ("flops=-0.5", "must be positive"), ("params=0K", "must be positive"), ("latency=-2ms", "must be positive"),
    ("flops=1e-400", "must be positive"), ("latency=1.5", "a ratio must lie in (0, 1]"),
    ("flops=", "is not of the form key=value"), ("flops=0.5x", "unknown unit 'x'"),
])
def test_a_budget_that_is_no_usable_bound_is_refused(capsys, tmp_path: Path, budget: str, said: str) -> None:
    code = main([*SEARCH, "--budget", budget, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert said in err and repr(budget) in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pick, said", [
    ("flops<=nan", "is not a number"), ("latency<=inf", "is not a number"),
    ("params<=1e400", "too large to be a finite number"), ("flops<=1e300T", "too large to be a finite number"),
    ("flops<=0", "must be positive"), ("params<=-0.3", "must be positive"), ("latency<=-1ms", "must be positive"),
    ("accuracy>=1.5", "accuracy is a fraction in [0, 1]"), ("accuracy>=-0.1", "accuracy is a fraction in [0, 1]"),
    ("accuracy>=95%", "is not a number"),
])
def test_a_pick_bound_that_is_no_usable_number_is_refused(run_copy: Path, pick: str, said: str) -> None:
    before = sorted(p.name for p in run_copy.iterdir())
    done = cli("export", str(run_copy), "--pick", pick)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and said in done.stderr and repr(pick) in done.stderr, done.stderr
    assert sorted(p.name for p in run_copy.iterdir()) == before, "nothing written"


@pytest.mark.parametrize("line, said", [
    ("level_step: [0.1]", "level_step must be a number, got [0.1]"),
    ("min_keep_ratio: half", "min_keep_ratio must be a number, got 'half'"),
    ("level_step: 1e-1\nmin_keep_ratio: 0.5\nmin_channels: 2.0\nround_to: true", "round_to must be a whole number"),
    ("min_channels: 1.5", "min_channels must be a whole number, got 1.5"),
    ("round_to: true", "round_to must be a whole number, got True"),
    ("min_channels: abc", "min_channels must be a whole number, got 'abc'"),
    ("level_step: .nan", "level step must be in (0, 1), got nan"),
    ("never_prune: stem", "never_prune must be a list of layer-name patterns"),
])
def test_a_space_file_value_of_the_wrong_type_is_named(capsys, tmp_path: Path, line: str, said: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(line + "\n")
    code = main([*SEARCH, "--space", str(space), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert said in err and repr(str(space)) in err, err
    assert not (tmp_path / "run").exists()
