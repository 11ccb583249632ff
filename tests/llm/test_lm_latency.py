"""The language-model latency model: per-block savings from whole-model timings, made
monotone, calibrated; and latency budgets through the CLI (search, resume, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from autoprune.cli import main  # noqa: E402
from autoprune.llm import latency as lm_latency  # noqa: E402
from autoprune.llm.lm_evaluator import LMEvaluatorConfig  # noqa: E402
from autoprune.llm.space import build_lm_space  # noqa: E402
from autoprune.space.levels import LevelGrid  # noqa: E402
from autoprune.testing.tiny_lm import save_tiny_model_dir, tiny_model  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"


def _fake_clock(monkeypatch: pytest.MonkeyPatch, calls: list[int], *, load_after: int | None = None,
                load_ms: float = 0.0) -> None:
    """Milliseconds that grow exactly with the parameters a model keeps, plus a fixed overhead;
    from timing number ``load_after`` on, other work on the machine adds ``load_ms`` to each."""
    def timed(model, config, seq_len, *, seed=0, decode_too=True):  # noqa: ANN001, ANN202
        calls.append(1)
        busy = load_ms if load_after is not None and len(calls) > load_after else 0.0
        return {"latency_ms": 0.5 + busy + 1e-4 * sum(p.numel() for p in model.parameters()),
                "latency_iqr_ms": 0.0}

    monkeypatch.setattr(lm_latency, "measure_lm_latency", timed)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tables_built_from_uniform_timings_predict_any_candidate(family: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=LevelGrid.from_step(step=0.25, min_ratio=0.25), seq_len=16)
    calls: list[int] = []
    _fake_clock(monkeypatch, calls)
    request = lm_latency.LMLatencyRequest(dense=dense, space=space, config=LMEvaluatorConfig(device="cpu"),
                                          seq_len=16, cache_folder=tmp_path)
    model = lm_latency.build_lm_latency_model(request)
    # per kind, one pair (dense, candidate) per distinct kept count; warm-up, dense, and the calibration
    assert len(calls) <= 2 * 2 * (space.n_levels - 1) + 2 + 2 + lm_latency.CALIBRATION_CANDIDATES
    truth = lambda levels: 0.5 + 1e-4 * sum(p.numel() for p in lm_latency.prune(dense, space, levels)[0].parameters())  # noqa: E731
    rng = np.random.default_rng(0)
    for levels in [space.dense_candidate(), space.sparsest_candidate(),
                   *rng.integers(0, space.n_levels, size=(6, space.n_groups))]:
        assert model.predict(levels)[0] == pytest.approx(truth(levels), rel=1e-6, abs=1e-6)
    calls.clear()
    again = lm_latency.build_lm_latency_model(request)  # measured once per machine: read from the cache
    assert not calls and again.to_dict() == model.to_dict()


def test_load_that_arrives_during_the_build_does_not_enter_the_savings(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Other work starts right after the first dense timing and stays: compared with that one
    timing, every candidate would look slower than dense (no saving at all); compared with
    the dense model timed just before it, each saving is exact."""
    dense = tiny_model("llama")
    space = build_lm_space(dense, grid=LevelGrid.from_step(step=0.25, min_ratio=0.25), seq_len=16)
    _fake_clock(monkeypatch, [], load_after=2, load_ms=50.0)
    model = lm_latency.build_lm_latency_model(lm_latency.LMLatencyRequest(
        dense=dense, space=space, config=LMEvaluatorConfig(device="cpu"), seq_len=16, cache_folder=tmp_path))
    truth = lambda levels: 50.5 + 1e-4 * sum(p.numel() for p in lm_latency.prune(dense, space, levels)[0].parameters())  # noqa: E731
    for levels in [space.dense_candidate(), space.sparsest_candidate(),
                   *np.random.default_rng(1).integers(0, space.n_levels, size=(6, space.n_groups))]:
        assert model.predict(levels)[0] == pytest.approx(truth(levels), rel=1e-6)


def test_savings_fall_as_more_is_kept_and_are_never_negative() -> None:
    noisy = {0: 0.9, 2: 0.25, 4: 0.31, 6: -0.05, 8: 0.02}
    saved = lm_latency.monotone_savings(noisy)
    counts = sorted(saved)
    assert all(saved[a] >= saved[b] for a, b in zip(counts, counts[1:]))
    assert min(saved.values()) >= 0 and saved[0] == pytest.approx(0.9)


def _paragraphs() -> list[str]:
    return [line for line in PROSE.read_text().splitlines() if line.strip()]


def test_a_language_model_search_holds_a_latency_budget_and_resumes_with_its_tables(
        tmp_path: Path, dense_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, [])  # real timings of a tiny model on a busy machine may leave no candidate under budget
    model_dir = save_tiny_model_dir(tmp_path / "llama", "llama", _paragraphs())
    run_dir = tmp_path / "run"
    argv = ["-q", "search", "--model", f"hf:{model_dir}", "--data", f"text:{PROSE}", "--seq-len", "32",
            "--budget", "latency=0.97", "--latency-repeats", "1", "--fidelity", "0", "--run-dir", str(run_dir)]
    assert main([*argv, "--trials", "4"]) == 0
    info = json.loads((run_dir / "run.json").read_text())
    stored = info["latency_model"]
    assert stored and info["limits"]["latency"] < info["dense"]["predicted_latency_ms"]
    model = lm_latency.LatencyModel.from_dict(stored)
    records = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert all(model.predict(np.array(r["levels"]))[0] <= info["limits"]["latency"] + 1e-9 for r in records)
    for tables in dense_cache.glob("latency-lm-*.json"):
        tables.unlink()
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "6"]) == 0
    assert not list(dense_cache.glob("latency-lm-*.json")), "the resume measured no tables"
    assert json.loads((run_dir / "run.json").read_text())["latency_model"] == stored
