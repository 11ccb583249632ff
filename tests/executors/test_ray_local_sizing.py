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
