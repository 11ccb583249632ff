"""A language-model search on Ray workers evaluates the same trials as one in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from autoprune.cli import main  # noqa: E402
from autoprune.testing.tiny_lm import save_tiny_model_dir  # noqa: E402

pytestmark = pytest.mark.ray

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"
COMMON = ["--seq-len", "32", "--budget", "params=0.5", "--searcher", "random", "--trials", "6", "--fidelity", "2",
          "--latency-repeats", "0", "--seed", "1"]


def test_ray_workers_and_local_evaluate_the_same_language_model_trials(ray_instance: Any, tmp_path: Path) -> None:
    texts = [line for line in PROSE.read_text().splitlines() if line.strip()]
    model = save_tiny_model_dir(tmp_path / "qwen2", "qwen2", texts)
    base = ["-q", "search", "--model", f"hf:{model}", "--data", f"text:{PROSE}", *COMMON]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker runs, so the metrics agree to the bit
    try:
        assert main([*base, "--run-dir", str(tmp_path / "local")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main([*base, "--executor", "ray", "--workers", "2", "--run-dir", str(tmp_path / "ray")]) == 0

    def records(name: str) -> dict[int, dict]:
        lines = (tmp_path / name / "trials.jsonl").read_text().splitlines()
        return {r["trial_id"]: r for r in map(json.loads, lines)}

    local, ray = records("local"), records("ray")
    assert sorted(local) == sorted(ray) == list(range(6))
    for trial_id, record in local.items():
        assert ray[trial_id]["levels"] == record["levels"]
        assert ray[trial_id]["status"] == record["status"] == "ok"
        for metric in ("perplexity", "kl_to_dense", "flops", "params"):
            assert ray[trial_id]["metrics"][metric] == pytest.approx(record["metrics"][metric], rel=1e-6), metric
    session = json.loads((tmp_path / "ray" / "run.json").read_text())["sessions"][-1]
    assert session["workers"]["workers"] == 2 and session["workers"]["jobs"] == 6
