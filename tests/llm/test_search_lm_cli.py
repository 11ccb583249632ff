"""Language models end to end through the CLI: a tiny Llama with GQA saved as a real local
Hugging Face directory, searched by darwin and tyr on shipped prose, then front, export,
load in a fresh process with generate, resume after a kill, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from autoprune.cli import main  # noqa: E402
from autoprune.testing.tiny_lm import save_tiny_model_dir  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"
#: small enough for seconds per search: 32-token sequences, training-free staged searchers
COMMON = ["--seq-len", "32", "--budget", "params=0.6", "--latency-repeats", "1"]
DARWIN = ["--searcher", "darwin", "--searcher-option", "fitness=kl_to_dense", "--searcher-option", "offspring=4",
          "--searcher-option", "survivors=[2,1]", "--searcher-option", "stage_steps=[2,2]",
          "--searcher-option", "stage_samples=[2,4]"]
TYR = ["--searcher", "tyr", "--searcher-option", "offspring=4", "--searcher-option", "survivors=[2,1]",
       "--searcher-option", "stage_samples=[2,4]", "--searcher-option", "generations_per_round=1"]


def _paragraphs() -> list[str]:
    return [line for line in PROSE.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("lm") / "llama", "llama", _paragraphs())


def _search(model_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["-q", "search", "--model", f"hf:{model_dir}", "--data", f"text:{PROSE}", *COMMON, *extra,
            "--run-dir", str(run_dir)]


def _journal(run_dir: Path) -> list[dict]:
    """The journal's complete lines (a line a kill cut short is left out, as a resume leaves it out)."""
    lines = (run_dir / "trials.jsonl").read_text().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]


@pytest.fixture(scope="module")
def darwin_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "darwin"
    assert main(_search(model_dir, run_dir, *DARWIN, "--trials", "14")) == 0
    return run_dir


def test_darwin_searches_a_language_model_and_records_perplexity(darwin_run: Path) -> None:
    info = json.loads((darwin_run / "run.json").read_text())
    assert info["quality"]["metric"] == "perplexity"
    assert info["dense"]["kl_to_dense"] == 0.0 and info["dense"]["perplexity"] > 1
    assert info["model_spec"]["model_type"] == "llama"
    records = _journal(darwin_run)
    assert sorted(r["trial_id"] for r in records) == list(range(14))
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all(r["metrics"]["params"] <= 0.6 * info["dense"]["params"] for r in ok)
    assert all({"perplexity", "kl_to_dense", "flops", "decode_ms_per_token"} <= set(r["metrics"]) for r in ok)
    assert info["incumbent"] is not None  # darwin's own choice, after one generation


def test_front_ranks_by_perplexity(darwin_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["front", str(darwin_run)]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "held-out perplexity down" in out and "accuracy" not in out


def test_tyr_searches_a_language_model(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "tyr"
    assert main(_search(model_dir, run_dir, *TYR, "--trials", "12")) == 0
    records = _journal(run_dir)
    assert len(records) == 12 and all(r["status"] == "ok" for r in records)
    assert all(r["fidelity"] == 0 for r in records)  # training-free: KL after pruning


def test_emo_searches_a_language_model_by_its_kl(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "emo"
    assert main(_search(model_dir, run_dir, "--searcher", "emo", "--searcher-option", "pop_size=4",
                        "--trials", "8", "--fidelity", "0")) == 0
    records = _journal(run_dir)
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    # the second generation was bred from ranked parents: not every trial a first-population uniform
    assert len({tuple(r["levels"]) for r in records}) == 8
    front = (run_dir / "front.csv").read_text().splitlines()
    assert len(front) >= 2 and "perplexity" in front[0]


def test_export_then_load_and_generate_in_a_fresh_process(darwin_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exported"
    assert main(["-q", "export", str(darwin_run), "--out", str(out), "--steps", "2"]) == 0
    assert "test perplexity" in capsys.readouterr().out
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["kind"] == "language-model" and recipe["metrics"]["test_perplexity"] > 1
    code = (
        "import json, torch, autoprune\n"
        f"m = autoprune.load({str(out)!r})\n"
        "t = m.autoprune_tokenizer\n"
        "ids = t('the river', return_tensors='pt').input_ids\n"
        "out = m.generate(ids, max_new_tokens=6, do_sample=False)\n"
        "print(json.dumps({'new': int(out.shape[1] - ids.shape[1]),"
        " 'params': sum(p.numel() for p in m.parameters())}))\n"
    )
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["new"] == 6
    assert shown["params"] < json.loads((darwin_run / "run.json").read_text())["dense"]["params"] + 10**6


def test_a_killed_language_model_search_resumes_without_repeating_a_trial(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    argv = [sys.executable, "-m", "autoprune.cli", *_search(model_dir, run_dir, *DARWIN, "--trials", "14")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = run_dir / "trials.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = len(_journal(run_dir))
    assert 4 <= before <= 14
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "14"]) == 0
    ids = [r["trial_id"] for r in _journal(run_dir)]
    assert sorted(ids) == list(range(14))  # none lost, none twice
    sessions = json.loads((run_dir / "run.json").read_text())["sessions"]
    assert sessions[-1]["replayed"] == before


@pytest.mark.parametrize(("argv", "said"), [
    (["--model", "hf:{missing}", "--data", "text:{prose}"], "does not exist"),
    (["--model", "hf:org/some-model", "--data", "text:{prose}"], "hub name"),
    (["--model", "hf:{notmodel}", "--data", "text:{prose}"], "config.json"),
    (["--data", "text:{prose}"], "only a language model reads"),
    (["--model", "hf:{model}", "--data", "digits"], "is not text"),
    (["--model", "hf:{model}", "--data", "text:{prose}", "--seq-len", "5000"], "beyond the model's context"),
    (["--model", "hf:{model}", "--data", "text:{prose}", "--seq-len", "250"], "needs at least"),
    (["--model", "hf:{model}", "--data", "text:{prose}", "--budget", "params=0.005"], "no attention or MLP block"),
    (["--model", "hf:{model}", "--data", "text:{prose}", "--budget", "latency=0.5", "--latency-repeats", "0"],
     "needs every trial's latency measured"),
    (["--seq-len", "64"], "only to language models"),
    (["--train-params", "norms-and-biases"], "only to language models"),
    (["--model", "hf:{model}", "--data", "text:{prose}", "--train-params", "norms"], "must be one of all"),
])
def test_bad_language_model_input_gets_one_sentence(model_dir: Path, tmp_path: Path, argv: list[str],
                                                    said: str) -> None:
    (tmp_path / "notmodel").mkdir()
    values = {"missing": tmp_path / "absent", "prose": PROSE, "notmodel": tmp_path / "notmodel", "model": model_dir}
    filled = [a.format(**values) for a in argv]
    if "--budget" not in filled:
        filled += ["--budget", "params=0.6"]
    if "--seq-len" not in filled:
        filled += ["--seq-len", "32"]
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "autoprune.cli", "-q", "search", *filled, "--trials", "2",
                           "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in done.stderr, done.stderr
    assert said in message[0]
    assert not run_dir.exists()  # nothing half written


def test_a_uniform_export_is_also_a_plain_hugging_face_directory(model_dir: Path, tmp_path: Path) -> None:
    import torch
    import transformers

    import autoprune

    run_dir = tmp_path / "uniform"
    assert main(_search(model_dir, run_dir, "--searcher", "uniform", "--trials", "1")) == 0
    out = tmp_path / "exported"
    assert main(["-q", "export", str(run_dir), "--out", str(out), "--steps", "0"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["hf_directory"] == "hf" and recipe["hf_directory_missing_because"] is None
    plain = transformers.AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    ours = autoprune.load(out)
    ids = torch.tensor([[5, 9, 14, 3, 7, 21]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, ours(ids).logits)
    assert plain.config.num_key_value_heads < 2 or plain.config.intermediate_size < 96  # really pruned


def test_norms_and_biases_only_retraining_leaves_every_other_weight_as_pruned(model_dir: Path,
                                                                              tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run_dir = tmp_path / "perp"
    assert main(_search(model_dir, run_dir, "--searcher", "uniform", "--trials", "1", "--fidelity", "2",
                        "--train-params", "norms-and-biases", "--lr", "0.01")) == 0
    assert json.loads((run_dir / "run.json").read_text())["config"]["train_params"] == "norms-and-biases"
    weights = {}
    for steps in ("0", "3"):
        out = tmp_path / f"export-{steps}"
        assert main(["-q", "export", str(run_dir), "--out", str(out), "--steps", steps]) == 0
        weights[steps] = load_file(out / "model.safetensors")
    changed = {k for k, v in weights["0"].items() if not torch.equal(v, weights["3"][k])}
    assert changed and all("norm" in k or k.endswith(".bias") for k in changed), changed


def test_a_run_whose_model_files_changed_is_not_resumed(tmp_path: Path) -> None:
    model = save_tiny_model_dir(tmp_path / "llama", "llama", _paragraphs())
    run_dir = tmp_path / "run"
    assert main(_search(model, run_dir, "--searcher", "random", "--trials", "2", "--fidelity", "0")) == 0
    save_tiny_model_dir(model, "llama", _paragraphs(), seed=7)  # other weights at the same path
    done = subprocess.run([sys.executable, "-m", "autoprune.cli", "-q", "search", "--resume", str(run_dir),
                           "--trials", "4"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 2 and "model files" in done.stderr and "changed" in done.stderr, done.stderr
    assert len(_journal(run_dir)) == 2
