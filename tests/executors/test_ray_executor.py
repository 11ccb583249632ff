"""RayExecutor on stand-in evaluations that sleep: streaming, faults, retries, utilisation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoprune.errors import UserError
from autoprune.executors.base import Job
from autoprune.executors.synthetic import SleepPayload, sleep_runner

pytestmark = pytest.mark.ray


def _jobs(n: int, start: int = 0) -> list[Job]:
    return [Job(trial_id=i, levels=np.array([i % 4, (i // 4) % 4], dtype=np.int64), fidelity=3, seed=0)
            for i in range(start, start + n)]


def _executor(payload: SleepPayload, **options: Any):  # noqa: ANN202
    from autoprune.executors.ray_executor import RayExecutor

    return RayExecutor(factory=sleep_runner, payload=payload, **{"workers": 2, **options})


def test_results_stream_back_once_each_while_both_workers_run(ray_instance: Any) -> None:
    with _executor(SleepPayload(seconds=0.3)) as executor:
        assert executor.session.mode == "borrowed"  # the fixture's Ray is used, not a second one
        assert executor.workers == 2
        assert executor.wait_ready(timeout=120) == 2  # on a loaded machine an actor may take seconds to start
        results = list(executor.run(_jobs(8)))
        assert sorted(r.trial_id for r in results) == list(range(8))
        assert all(r.ok for r in results)
        assert {r.metrics["pid"] for r in results} == {w["pid"] for w in executor.workers_info()}
        # in parallel: some two jobs on different workers slept at the same time
        assert any(a.metrics["pid"] != b.metrics["pid"] and a.metrics["started"] < b.metrics["finished"]
                   and b.metrics["started"] < a.metrics["finished"] for a in results for b in results)
        usage = executor.utilisation()
        assert usage["jobs"] == 8 and usage["workers"] == 2 and usage["retried"] == 0
        assert usage["busy_seconds"] >= 8 * 0.3 * 0.99  # every sleep counted as busy
        assert 0 < usage["utilisation"] <= 1
        assert [w["jobs"] for w in usage["per_worker"]] != [8, 0]
        more = list(executor.run(_jobs(3, start=8)))  # the same workers take the next batch
        assert sorted(r.trial_id for r in more) == [8, 9, 10]
    assert ray_instance.is_initialized()  # borrowed: left running for its owner


def test_a_worker_killed_once_is_replaced_and_its_job_runs_again(ray_instance: Any, tmp_path: Path) -> None:
    payload = SleepPayload(seconds=0.1, kill_trials=(2,), kill_once_dir=str(tmp_path))
    with _executor(payload) as executor:
        results = list(executor.run(_jobs(6)))
        assert sorted(r.trial_id for r in results) == list(range(6))
        assert all(r.ok for r in results)
        usage = executor.utilisation()
        assert usage["retried"] == 1 and usage["replaced"] == 1
        # the replacement may still be starting: the other worker finished the rest meanwhile
        assert {w["state"] for w in executor.workers_info()} <= {"idle", "starting"}


def test_a_job_that_always_kills_its_worker_fails_after_bounded_retries(ray_instance: Any) -> None:
    payload = SleepPayload(seconds=0.05, kill_trials=(1,))
    with _executor(payload, max_retries=1) as executor:
        results = {r.trial_id: r for r in executor.run(_jobs(5))}
        assert sorted(results) == list(range(5))
        failed = results[1]
        assert failed.status == "failed"
        assert "died 2 times" in failed.error and "ActorDiedError" in failed.error
        assert all(results[i].ok for i in (0, 2, 3, 4))
        assert executor.utilisation()["replaced"] == 2


def test_an_abandoned_run_leaves_no_stale_result_for_the_next(ray_instance: Any) -> None:
    with _executor(SleepPayload(seconds=0.3)) as executor:
        stream = executor.run(_jobs(6))
        first = next(stream)
        stream.close()  # the caller stops early (an exception in the loop, Ctrl-C)
        assert first.trial_id in range(6)
        results = list(executor.run(_jobs(2, start=100)))
        assert sorted(r.trial_id for r in results) == [100, 101]


def test_bad_options_are_refused(ray_instance: Any) -> None:
    with pytest.raises(ValueError, match="max_retries"):
        _executor(SleepPayload(), max_retries=-1)
    with pytest.raises(UserError, match="gpus-per-worker"):
        _executor(SleepPayload(), gpus_per_worker=0.5)
    with pytest.raises(ValueError, match="seconds"):
        SleepPayload(seconds=-1)


def test_bad_addresses_are_refused_at_once() -> None:
    pytest.importorskip("ray")
    from ray_procs import free_ports

    from autoprune.executors.ray_cluster import check_address

    for bad in ("foo", "host:", ":6379", "10.0.0.5:port"):
        with pytest.raises(UserError, match="HOST:PORT"):
            check_address(bad)
    (port,) = free_ports(1)
    started = time.monotonic()
    with pytest.raises(UserError, match="no Ray cluster answers"):
        check_address(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 20  # refused at once, not after a connect timeout of minutes
    check_address("auto")
    check_address("ray://10.0.0.5:10001", reachable=False)


def test_workers_that_cannot_start_are_reported_in_one_sentence(ray_instance: Any) -> None:
    with pytest.raises(UserError, match="no Ray worker could start.*a_package_this_worker_lacks"):
        _executor(SleepPayload(fail_to_start=True), workers=1)


def test_call_runs_in_a_worker_with_its_threads_and_passes_errors_back(ray_instance: Any) -> None:
    import os

    import torch

    with _executor(SleepPayload(seconds=0.0)) as executor:
        assert executor.call(os.getpid) in {w["pid"] for w in executor.workers_info()} - {os.getpid()}
        assert executor.call(torch.get_num_threads) == 1  # 2 workers on 2 CPUs: one thread each
        with pytest.raises(ValueError, match="invalid literal"):
            executor.call(int, "not a number")  # fn's own error, as if called here
        assert sorted(r.trial_id for r in executor.run(_jobs(2))) == [0, 1]  # the workers still serve jobs


def test_threads_sets_each_workers_cpus_and_torch_threads(ray_instance: Any) -> None:
    with _executor(SleepPayload(seconds=0.0), workers=None, threads=2) as executor:
        assert executor.workers == 1  # 2 CPUs hold one worker of 2 threads
        assert executor.session.cpus_per_worker == 2.0
        assert executor.call(__import__("torch").get_num_threads) == 2
        assert sorted(r.trial_id for r in executor.run(_jobs(3))) == [0, 1, 2]
    with pytest.raises(UserError, match="fewer than the 3 --threads one worker reserves"):
        _executor(SleepPayload(), workers=None, threads=3)
    with pytest.raises(UserError, match="threads must be a whole number"):
        _executor(SleepPayload(), threads=0)
