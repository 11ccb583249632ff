"""Every registered searcher, with its default options, searches a language model through
the CLI (or, where it cannot, says so in one sentence): a searcher added later is held to it
without editing this file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # about a minute for all searchers; CI runs it with the slow tests

from autoprune.cli import main  # noqa: E402
from autoprune.searchers import SEARCHERS  # noqa: E402
from autoprune.testing.tiny_lm import save_tiny_model_dir  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"
#: searchers that cannot rank a language model's units, and the reason their refusal gives
REFUSED = {"global": "language model"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    paragraphs = [line for line in PROSE.read_text().splitlines() if line.strip()]
    return save_tiny_model_dir(tmp_path_factory.mktemp("lm") / "llama", "llama", paragraphs)


@pytest.mark.parametrize("searcher", sorted(SEARCHERS))
def test_every_searcher_runs_on_a_language_model_with_its_defaults(searcher: str, model_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    status = main(["-q", "search", "--model", f"hf:{model_dir}", "--data", f"text:{PROSE}", "--seq-len", "32",
                   "--budget", "params=0.6", "--latency-repeats", "1", "--fidelity", "1", "--trials", "6",
                   "--searcher", searcher, "--run-dir", str(run_dir)])
    error = capsys.readouterr().err.strip()
    if searcher in REFUSED:
        assert status == 2 and error.count("\n") == 0 and REFUSED[searcher] in error
        assert not run_dir.exists(), "a refused search leaves nothing behind"
        return
    assert status == 0, error
    info = json.loads((run_dir / "run.json").read_text())
    records = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    trials = [r for r in records if r.get("kind", "trial") == "trial"]
    assert trials and any(r["status"] == "ok" for r in trials)
    assert all(r["metrics"]["params"] <= 0.6 * info["dense"]["params"] + 1e-6 for r in trials if r["status"] == "ok")
    assert all("kl_to_dense" in r["metrics"] for r in trials if r["status"] == "ok")
