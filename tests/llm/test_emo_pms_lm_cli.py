"""``emo-pms`` on a language model through the CLI: the decoder blocks divide into
sub-networks, each measured by the distortion of the hidden states where it ends (after
feature mimicking here), then whole networks within the budget, and a resume that
replays everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from autoprune.cli import main  # noqa: E402
from autoprune.testing.tiny_lm import save_tiny_model_dir  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    paragraphs = [line for line in PROSE.read_text().splitlines() if line.strip()]
    return save_tiny_model_dir(tmp_path_factory.mktemp("lm") / "llama", "llama", paragraphs)


def test_emo_pms_divides_a_language_model_at_its_decoder_blocks(model_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    command = ["-q", "search", "--model", f"hf:{model_dir}", "--data", f"text:{PROSE}", "--seq-len", "32",
               "--budget", "params=0.6", "--latency-repeats", "0", "--fidelity", "1", "--trials", "6",
               "--searcher", "emo-pms", "--searcher-option", "pop_size=4", "--searcher-option", "generations=1",
               "--searcher-option", "calibration_samples=4", "--searcher-option", "mimic_steps=2",
               "--run-dir", str(run)]
    assert main(command) == 0, capsys.readouterr().err
    info = json.loads((run / "run.json").read_text())
    assert info["evaluator"]["feature_distortion"] is True and info["evaluator"]["measurement_training"] == "features"
    assert info["evaluator"]["feature_sub_networks"] == 3
    boundaries = ["model.layers.0", "model.layers.1", "output"]
    assert info["searcher_report"]["split"]["boundaries"] == boundaries
    records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    measurements = [r for r in records if r.get("kind") == "measurement"]
    trials = [r for r in records if "kind" not in r]
    assert measurements and trials and all(r["status"] == "ok" for r in records)
    assert all(f"feature_distortion:{b}" in r["metrics"] for r in measurements for b in boundaries)
    pruned = [r for r in measurements if r["metrics"]["params_ratio"] < 1.0]
    assert pruned and all(r["fidelity"] == 2 for r in pruned)
    # a block whose attention and MLP are both removed has nothing to learn; the others train
    removed = max(max(r["levels"]) for r in records)
    assert all(r["metrics"]["steps"] == 2 for r in pruned if removed not in r["levels"])
    assert all(r["metrics"]["params"] <= 0.6 * info["dense"]["params"] + 1e-6 for r in trials)
    assert "emo-pms: 3 sub-networks ending at model.layers.0, model.layers.1, output" in capsys.readouterr().out
    assert main(["-q", "search", "--resume", str(run)]) == 0
    assert [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()] == records
