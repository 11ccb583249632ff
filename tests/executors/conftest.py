"""A Ray instance on this machine (2 CPUs), shared by the Ray tests of the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_instance(dense_cache: Path) -> Any:
    """Ray started once for the session with 2 CPUs; executors in this process borrow it."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # someone else's: use it, leave it
        yield ray
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING", runtime_env={"env_vars": {"AUTOPRUNE_CACHE": str(dense_cache)}})
    yield ray
    ray.shutdown()


