"""``--threads``: torch threads of in-process evaluations, and the busy-machine warning."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import autoprune
from autoprune.api import in_process_threads
from autoprune.cli import main
from autoprune.config import SearchConfig
from autoprune.threads import fitting_threads, local_cpus, others_running, torch_threads

FAST = {"trials": 2, "fidelity": 5, "bn_batches": 1}


def test_beside_busy_cores_fewer_threads_leave_them_alone() -> None:
    assert fitting_threads(1.0, cpus=2, threads=2) == 1
    assert fitting_threads(3.0, cpus=8, threads=8) == 5
    assert fitting_threads(2.0, cpus=2, threads=2) == 1  # every core busy: one thread is the least


@pytest.mark.parametrize(("others", "cpus", "threads"), [
    (None, 2, 2),   # the kernel does not say (not Linux)
    (0.0, 2, 2),    # nothing else runs
    (0.2, 2, 2),    # a stray short-lived task in one sample is not a busy core
    (1.0, 2, 1),    # one thread beside one busy core: they fit
    (1.0, 8, 4),    # fits beside it
    (3.0, 2, 1),    # one thread is already the least there is
])
def test_threads_that_fit_or_cannot_shrink_are_kept(others: float | None, cpus: int, threads: int) -> None:
    assert fitting_threads(others, cpus, threads) is None


def test_others_running_reads_the_runnable_count_less_this_process(tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.71 0.76 0.30 3/80 2228\n")
    assert others_running(samples=3, interval=0.0, source=loadavg) == 2
    loadavg.write_text("0.00 0.00 0.00 1/80 2228\n")
    assert others_running(samples=1, source=loadavg) == 0
    loadavg.write_text("garbled")
    assert others_running(samples=1, source=loadavg) is None
    assert others_running(samples=1, source=tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="the kernel's runnable count is Linux's")
def test_a_busy_program_is_seen_by_the_real_kernel_count() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    try:
        time.sleep(0.5)
        assert others_running(samples=9, interval=0.02) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_torch_threads_sets_the_count_for_the_block_and_gives_it_back() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_a_search_with_threads_evaluates_with_them_and_records_them(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    run = autoprune.search(run_dir=tmp_path / "run", progress=False, threads=1, **FAST)
    assert torch.get_num_threads() == before  # the caller's setting is given back
    assert run.config.threads == 1 and run.info["environment"]["threads"] == 1
    trials = [json.loads(line) for line in (run.path / "trials.jsonl").read_text().splitlines()]
    assert {t["metrics"]["threads"] for t in trials} == {1}
    assert run.info["dense_latency"]["threads"] == 1  # the reference latency too


def test_resume_may_change_threads_but_nothing_that_defines_the_run(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    common = ["-q", "search", "--fidelity", "5", "--bn-batches", "1"]
    assert main([*common, "--trials", "2", "--threads", "1", "--run-dir", str(run_dir)]) == 0
    threads = 2 if local_cpus() >= 2 else 1
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "3", "--threads", str(threads)]) == 0
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert [t["metrics"]["threads"] for t in trials] == [1, 1, threads]
    assert json.loads((run_dir / "run.json").read_text())["config"]["threads"] == threads
    capsys.readouterr()

    before = (run_dir / "run.json").read_text()
    for flags in (["--fidelity", "7"], ["--searcher-option", "a=1"], ["--seed", "3"]):
        assert main(["search", "--resume", str(run_dir), *flags]) == 2
        err = capsys.readouterr().err
        assert f"drop {flags[0]} (only --address, --executor, --gpus-per-worker, --threads, --time-limit, " \
               "--trials, --workers may change)" in err
        assert "Traceback" not in err
    assert (run_dir / "run.json").read_text() == before


def test_bad_thread_counts_get_one_sentence(tmp_path: Path, capsys) -> None:
    for bad in ("0", "-2"):
        assert main(["search", "--threads", bad, "--run-dir", str(tmp_path / "run")]) == 2
        assert "threads must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_search_naming_no_threads_leaves_busy_cores_alone_and_says_so(caplog) -> None:
    if local_cpus() < 2 or not Path("/proc/loadavg").exists():
        pytest.skip("needs Linux and more than one core")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"]) for _ in range(local_cpus())]
    try:
        time.sleep(0.5)
        with torch_threads(local_cpus()), caplog.at_level(logging.WARNING, logger="autoprune.threads"):
            with in_process_threads(SearchConfig()):  # torch's default would be every core
                inside = torch.get_num_threads()
            warned = [r.getMessage() for r in caplog.records]
            caplog.clear()
            with in_process_threads(SearchConfig(threads=local_cpus())):  # the user chose: kept, no warning
                assert torch.get_num_threads() == local_cpus()
            assert not caplog.records
            assert torch.get_num_threads() == local_cpus()  # given back
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert inside == 1
    assert len(warned) == 1 and f"evaluating with 1 torch thread instead of {local_cpus()}" in warned[0]
    assert "pass --threads to choose" in warned[0]


def test_export_fine_tunes_with_the_threads_it_is_given(tmp_path: Path, capsys) -> None:
    run = autoprune.search(run_dir=tmp_path / "run", progress=False, threads=1, **FAST)
    threads = 2 if local_cpus() >= 2 else 1
    before = torch.get_num_threads()
    recipe = run.export(tmp_path / "out", pick="best", steps=3, threads=threads)
    assert recipe["metrics"]["threads"] == threads and torch.get_num_threads() == before
    assert main(["export", str(run.path), "--threads", "0", "--out", str(tmp_path / "out2")]) == 2
    assert "threads must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
