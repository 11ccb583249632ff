"""How big a private local Ray instance is made: the CPUs it is given decide how many
workers start. Checked against a recording stand-in for ``ray.init`` (no Ray needed)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import autoprune.executors.ray_cluster as cluster


class _Ray:
    def __init__(self) -> None:
        self.init_kwargs: dict[str, Any] = {}

    def init(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs


@pytest.fixture
def two_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "local_cpus", lambda: 2)
    monkeypatch.setattr(cluster, "local_gpus", lambda: 0)
    monkeypatch.setattr(cluster, "others_running", lambda: 0.0)


def test_one_worker_per_core_on_a_quiet_machine(two_idle_cores: None) -> None:
    ray = _Ray()
    cluster._start_local(ray, workers=None, gpus_per_worker=None, threads=1)
    assert ray.init_kwargs["num_cpus"] == 2 and ray.init_kwargs["num_gpus"] == 0


def test_busy_cores_are_left_to_their_programs(two_idle_cores: None, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cluster, "others_running", lambda: 1.0)
    ray = _Ray()
    with caplog.at_level(logging.WARNING):
        cluster._start_local(ray, workers=None, gpus_per_worker=None, threads=1)
    assert ray.init_kwargs["num_cpus"] == 1 and "keep about 1 of this machine's 2 cores busy" in caplog.text


def test_more_workers_than_cores_start_with_a_warning(two_idle_cores: None, caplog: pytest.LogCaptureFixture) -> None:
    ray = _Ray()
    with caplog.at_level(logging.WARNING):
        cluster._start_local(ray, workers=3, gpus_per_worker=None, threads=1)
    assert ray.init_kwargs["num_cpus"] == 3
    assert "3 workers of 1 thread share this machine's 2 cores" in caplog.text and "--workers 2" in caplog.text


class _RecordingEnvironment(_Ray):
    def init(self, **kwargs: Any) -> None:
        import os

        super().init(**kwargs)
        self.niceness = os.environ.get(cluster.WORKER_NICENESS_VARIABLE)


def test_workers_of_a_private_instance_start_at_normal_priority_unless_the_user_chose(
        two_idle_cores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster.WORKER_NICENESS_VARIABLE, raising=False)
    ray = _RecordingEnvironment()
    cluster._start_local(ray, workers=None, gpus_per_worker=None, threads=1)
    assert ray.niceness == "0"
    import os

    assert cluster.WORKER_NICENESS_VARIABLE not in os.environ  # restored after the start
    monkeypatch.setenv(cluster.WORKER_NICENESS_VARIABLE, "10")
    cluster._start_local(ray, workers=None, gpus_per_worker=None, threads=1)
    assert ray.niceness == "10" and os.environ[cluster.WORKER_NICENESS_VARIABLE] == "10"


_NICENESS_PROBE = """
import os
from autoprune.executors.ray_cluster import connect
session = connect(workers=1, address=None, gpus_per_worker=None)
import ray
print("worker niceness", ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote()))
ray.shutdown()
session.reaper.close()
"""


@pytest.mark.slow
def test_a_real_private_instance_runs_its_workers_at_the_drivers_priority() -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != cluster.WORKER_NICENESS_VARIABLE}
    done = subprocess.run([sys.executable, "-c", _NICENESS_PROBE], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"worker niceness {os.nice(0)}" in done.stdout
