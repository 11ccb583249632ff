"""Shared fixtures: a private cache of trained dense models for the whole test session.

Tests run torch on one thread (and so do the processes they start), unless
``AUTOPRUNE_TEST_THREADS`` says otherwise: with as many intra-op threads as cores, one
busy neighbour on a shared CI machine made the suite 6-15x slower (threads wait on each
other), while one thread degrades gracefully.
"""

from __future__ import annotations

import os
from pathlib import Path

THREADS = os.environ.get("AUTOPRUNE_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = THREADS  # before torch is imported, for this process and its children

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(THREADS))

from autoprune.torchvision_compat import make_torchvision_importable  # noqa: E402

make_torchvision_importable()  # the test extra's torchvision is a CUDA build beside CPU torch


@pytest.fixture(scope="session", autouse=True)
def dense_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the digits model once per session into a temporary cache, never the user's."""
    path = tmp_path_factory.mktemp("autoprune-cache")
    previous = os.environ.get("AUTOPRUNE_CACHE")
    os.environ["AUTOPRUNE_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("AUTOPRUNE_CACHE", None)
    else:
        os.environ["AUTOPRUNE_CACHE"] = previous


@pytest.fixture(scope="session")
def ray_instance(dense_cache: Path):  # noqa: ANN201 (the ray module)
    """Ray started once for the session with 2 CPUs on loopback; executors in this process borrow it."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # someone else's: use it, leave it
        yield ray
        return
    # log_to_driver=False: the raylet's own warnings (a disk over 95% full, say) would otherwise be
    # forwarded to this process's stderr at random moments, into the one-sentence errors other
    # tests read from the CLI.
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING", log_to_driver=False, runtime_env={"env_vars": {"AUTOPRUNE_CACHE": str(dense_cache)}})
    yield ray
    ray.shutdown()
