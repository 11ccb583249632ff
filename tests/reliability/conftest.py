"""One real finished run for the session; each test damages its own copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import SEARCH, cli  # noqa: E402


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, dense_cache: Path) -> Path:
    path = tmp_path_factory.mktemp("finished") / "run"
    done = cli(*SEARCH, "--run-dir", str(path))
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy
