"""Shared fixtures: a private cache of trained dense models for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
