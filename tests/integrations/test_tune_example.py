"""``examples/tune_asha.py`` runs as documented, on the tests' local Ray."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from autoprune.api import open_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # 6 Tune trials and a Ray start: about a minute alone

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tune_asha.py"


def test_the_example_searches_under_asha_and_leaves_a_run(ray_instance, tmp_path: Path,  # noqa: ANN001
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("tune_asha", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = example.main(["--budget", "flops=0.3", "--trials", "6", "--fidelity", "6", "--report-every", "2",
                         "--storage-path", str(tmp_path / "tune"), "--run-dir", str(tmp_path / "run"), "--seed", "4"])
    out = capsys.readouterr().out
    assert "6 trials" in out and "stopped early by ASHA" in out and f"run directory: {path}" in out
    run = open_run(path)
    assert len(run.trials) == 6 and not run.front.empty
