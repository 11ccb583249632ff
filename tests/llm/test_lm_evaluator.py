"""The language-model evaluator on real tiny models and shipped text: KL, perplexity, distillation, failures."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from autoprune.errors import UserError  # noqa: E402
from autoprune.evaluation.evaluator import EvaluationFailed  # noqa: E402
from autoprune.llm.lm_evaluator import (  # noqa: E402
    FITNESS_METRIC,
    QUALITY_METRIC,
    LMEvaluator,
    LMEvaluatorConfig,
    TopK,
    token_kl,
)
from autoprune.llm.text_data import load_text_data  # noqa: E402
from autoprune.testing.tiny_lm import tiny_model, tiny_tokenizer  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"
PARAGRAPHS = [p for p in PROSE.read_text(encoding="utf-8").split("\n\n") if p.strip()]
FAST = dict(measure_latency=False, device="cpu", eval_batch_size=4)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(PARAGRAPHS)


@pytest.fixture(scope="module")
def data(tokenizer):
    return load_text_data(f"text:{PROSE}", tokenizer, seq_len=32, val_fraction=0.15, test_fraction=0.1)


def dense_for(family: str, tokenizer) -> torch.nn.Module:
    return tiny_model(family, seed=0, vocab_size=len(tokenizer))


def perturbed(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    """A copy with Gaussian noise of ``scale`` times each weight matrix's std added."""
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.ndim == 2:
                p.add_(torch.randn(p.shape, generator=generator) * p.std() * scale)
    return noisy


def builder(model: torch.nn.Module):
    """Levels [s] build the dense model with noise of s / 10 (level 0: the dense model itself)."""
    def build(levels: np.ndarray):
        scale = float(levels[0]) / 10
        return (copy.deepcopy(model) if scale == 0 else perturbed(model, scale)), {"noise": [int(levels[0])]}
    return build


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_dense_model_has_zero_kl_and_perplexity_is_exp_of_the_loss(family: str, tokenizer, data) -> None:
    dense = dense_for(family, tokenizer)
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense), config=LMEvaluatorConfig(**FAST))
    result = evaluator.run(np.array([0]), fidelity=0, seed=0)
    m = result.metrics
    assert m["kl_to_dense"] == pytest.approx(0.0, abs=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-9)
    assert m["loss"] == pytest.approx(evaluator.dense_metrics["loss"], rel=1e-6)
    # the loss is the plain held-out next-token cross-entropy
    with torch.no_grad():
        logits = dense(data.val).logits[:, :-1]
    assert m["loss"] == pytest.approx(float(F.cross_entropy(logits.flatten(0, 1), data.val[:, 1:].flatten())), rel=1e-5)
    assert m["eval_samples"] == len(data.val) and m["eval_tokens"] == len(data.val) * 31
    assert m["params_ratio"] == 1.0 and m["steps"] == 0 and m["kl_top_k"] == 0
    assert result.keep_indices == {"noise": [0]}
    assert QUALITY_METRIC in m and FITNESS_METRIC in m


def test_kl_grows_with_the_perturbation(tokenizer, data) -> None:
    dense = dense_for("llama", tokenizer)
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense), config=LMEvaluatorConfig(**FAST))
    kls = [evaluator.run(np.array([s]), fidelity=0, seed=0).metrics["kl_to_dense"] for s in (0, 2, 5, 10)]
    assert kls[0] < 1e-6 < kls[1] < kls[2] < kls[3]
    few = evaluator.run(np.array([5]), fidelity=0, seed=0, eval_samples=3).metrics
    assert few["eval_samples"] == 3 and few["kl_to_dense"] > 0


def test_top_k_kl_is_a_lower_bound_that_tightens_with_k() -> None:
    generator = torch.Generator().manual_seed(0)
    dense_logits = torch.randn(5, 7, 50, generator=generator) * 3
    student = dense_logits + torch.randn(5, 7, 50, generator=generator)
    log_p = F.log_softmax(dense_logits, dim=-1)
    full = token_kl(student, log_p)
    assert torch.allclose(full, F.kl_div(F.log_softmax(student, -1), log_p, log_target=True,
                                         reduction="none").sum(-1), atol=1e-5)
    previous = torch.zeros_like(full)
    for k in (1, 5, 20, 49):
        values, indices = log_p.topk(k, dim=-1)
        approx = token_kl(student, TopK(values, indices))
        assert bool((approx >= previous - 1e-5).all()) and bool((approx <= full + 1e-5).all())
        previous = approx
    values, indices = log_p.topk(50, dim=-1)
    assert torch.allclose(token_kl(student, TopK(values, indices)), full, atol=1e-4)
    assert float(token_kl(dense_logits, TopK(*log_p.topk(3, dim=-1))).abs().max()) < 1e-5


def test_the_evaluator_with_top_k_scores_like_the_full_kl_from_below(tokenizer, data) -> None:
    dense = dense_for("qwen2", tokenizer)
    full = LMEvaluator(dense=dense, data=data, build=builder(dense), config=LMEvaluatorConfig(**FAST))
    top = LMEvaluator(dense=dense, data=data, build=builder(dense), config=LMEvaluatorConfig(kl_top_k=8, **FAST))
    a = full.run(np.array([5]), fidelity=0, seed=0).metrics
    b = top.run(np.array([5]), fidelity=0, seed=0).metrics
    assert b["kl_top_k"] == 8 and 0 < b["kl_to_dense"] <= a["kl_to_dense"]
    assert b["loss"] == a["loss"]


@pytest.mark.parametrize("perp", [False, True])
def test_distillation_reduces_the_kl_of_a_perturbed_model(perp: bool, tokenizer, data) -> None:
    dense = dense_for("llama", tokenizer)
    config = LMEvaluatorConfig(lr=1e-2 if perp else 1e-3, batch_size=4, train_norms_and_biases_only=perp, **FAST)
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense), config=config)
    before = evaluator.run(np.array([6]), fidelity=0, seed=0)
    after = evaluator.run(np.array([6]), fidelity=30, seed=0)
    assert after.metrics["steps"] == 30 and after.metrics["samples"] == 120
    # norms alone undo less of a noise added to every matrix than all the weights do
    assert after.metrics["kl_to_dense"] < (0.9 if perp else 0.5) * before.metrics["kl_to_dense"]
    changed = {n for n, p in after.model.named_parameters()
               if not torch.equal(p, dict(before.model.named_parameters())[n])}
    if perp:
        assert changed and all("norm" in n for n in changed)  # Llama has no biases: only norms move
    else:
        assert any("proj" in n for n in changed)
    assert all(p.requires_grad for p in after.model.parameters())
    # continuing from the retrained weights keeps them: zero further steps score the same
    again = evaluator.run(np.array([6]), fidelity=0, seed=0, init_state=after.model.state_dict())
    assert again.metrics["kl_to_dense"] == pytest.approx(after.metrics["kl_to_dense"], rel=1e-6)
    # continuing at other levels (dp's rounds) is not built for language models: a failed trial
    with pytest.raises(EvaluationFailed, match="other levels"):
        evaluator.run(np.array([7]), fidelity=0, seed=0, init_state=after.model.state_dict(),
                      init_levels=np.array([6]))


@pytest.mark.parametrize("top_k", [None, 8])
def test_kept_teacher_targets_train_like_fresh_ones_without_running_the_teacher_again(top_k, tokenizer,
                                                                                      data) -> None:
    dense = dense_for("llama", tokenizer)
    evaluators = {mb: LMEvaluator(dense=dense, data=data, build=builder(dense),
                                  config=LMEvaluatorConfig(lr=1e-3, batch_size=4, kl_top_k=top_k,
                                                           teacher_cache_mb=mb, **FAST))
                  for mb in (0, 64)}
    for levels in ([6], [4], [6]):
        runs = {mb: e.run(np.array(levels), fidelity=5, seed=3).metrics for mb, e in evaluators.items()}
        assert runs[64]["kl_to_dense"] == pytest.approx(runs[0]["kl_to_dense"], rel=1e-4)
    assert evaluators[0].train_targets.teacher_sequences == 3 * 5 * 4
    assert evaluators[64].train_targets.teacher_sequences == 5 * 4, "the same batches: the teacher ran once"
    assert 0 < evaluators[64].train_targets.used <= 64 * 2**20 and not evaluators[0].train_targets.rows


def test_teacher_targets_beyond_the_memory_given_are_computed_each_time(tokenizer, data) -> None:
    dense = dense_for("llama", tokenizer)
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense),
                            config=LMEvaluatorConfig(lr=1e-3, batch_size=4, **FAST))
    row = evaluator._teacher_target(data.train[:1])
    evaluator.train_targets.max_bytes = 6 * row.nbytes  # six sequences' worth
    first = evaluator.run(np.array([6]), fidelity=5, seed=3).metrics
    second = evaluator.run(np.array([6]), fidelity=5, seed=3).metrics
    assert len(evaluator.train_targets.rows) == 6 and evaluator.train_targets.used <= 6 * row.nbytes
    assert evaluator.train_targets.teacher_sequences == 20 + 20 - 4, "only the first batch was whole in memory"
    assert second["kl_to_dense"] == pytest.approx(first["kl_to_dense"], rel=1e-4)


def test_a_mixed_lm_loss_also_learns_the_text(tokenizer, data) -> None:
    dense = dense_for("gpt2", tokenizer)  # random weights: the text itself is the only thing worth learning
    config = LMEvaluatorConfig(lr=1e-3, lm_weight=0.5, **FAST)
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense), config=config)
    before = evaluator.run(np.array([6]), fidelity=0, seed=0).metrics
    after = evaluator.run(np.array([6]), fidelity=20, seed=0).metrics
    assert after["loss"] < before["loss"] - 0.1 and after["loss"] < evaluator.dense_metrics["loss"]


def test_the_same_seed_gives_the_same_result(tokenizer, data) -> None:
    dense = dense_for("gpt2", tokenizer)  # GPT-2 has dropout: the seed must fix it too
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense), config=LMEvaluatorConfig(lr=1e-3, **FAST))
    first = evaluator.run(np.array([4]), fidelity=5, seed=7)
    second = evaluator.run(np.array([4]), fidelity=5, seed=7)
    other = evaluator.run(np.array([4]), fidelity=5, seed=8)
    assert first.metrics["kl_to_dense"] == second.metrics["kl_to_dense"] != other.metrics["kl_to_dense"]
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_latency_of_prefill_and_decode_is_measured(tokenizer, data) -> None:
    dense = dense_for("gpt2", tokenizer)  # 256 positions: the decoding prompt must leave room
    config = LMEvaluatorConfig(device="cpu", latency_seq_len=256, decode_tokens=4, latency_repeats=2)
    evaluator = LMEvaluator(dense=dense, data=data, build=builder(dense), config=config,
                            cost=lambda levels, model: {"flops": 123.0})
    m = evaluator.run(np.array([0]), fidelity=0, seed=0).metrics
    assert m["latency_ms"] > 0 and m["decode_ms_per_token"] > 0 and m["latency_iqr_ms"] >= 0
    assert m["flops"] == 123.0 and m["seconds"] >= m["build_seconds"] + m["train_seconds"]


def test_failures_are_failed_evaluations(tokenizer, data) -> None:
    dense = dense_for("llama", tokenizer)

    def unbuildable(levels: np.ndarray):
        raise ValueError("level 9 is beyond the grid")

    evaluator = LMEvaluator(dense=dense, data=data, build=unbuildable, config=LMEvaluatorConfig(**FAST))
    with pytest.raises(EvaluationFailed, match="could not build the candidate: ValueError: level 9"):
        evaluator.run(np.array([9]), fidelity=0, seed=0)

    def poisoned(levels: np.ndarray):
        model = copy.deepcopy(dense)
        with torch.no_grad():
            model.model.norm.weight.fill_(float("nan"))
        return model, {}

    evaluator = LMEvaluator(dense=dense, data=data, build=poisoned, config=LMEvaluatorConfig(**FAST))
    with pytest.raises(EvaluationFailed, match="retraining diverged: loss nan at step 1"):
        evaluator.run(np.array([0]), fidelity=3, seed=0)
    with pytest.raises(EvaluationFailed, match="held-out loss is nan"):
        evaluator.run(np.array([0]), fidelity=0, seed=0)

    def exploding(levels: np.ndarray):
        model = copy.deepcopy(dense)
        model.model.layers[0].mlp.register_forward_hook(
            lambda module, args, out: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")))
        return model, {}

    evaluator = LMEvaluator(dense=dense, data=data, build=exploding, config=LMEvaluatorConfig(**FAST))
    with pytest.raises(EvaluationFailed, match="out of memory"):
        evaluator.run(np.array([0]), fidelity=1, seed=0)


def test_data_from_another_tokenizer_or_too_long_sequences_are_refused(tokenizer, data) -> None:
    small = tiny_model("llama", vocab_size=64)
    with pytest.raises(UserError, match="vocabulary has 64 entries; tokenise the text with this model's tokenizer"):
        LMEvaluator(dense=small, data=data, build=builder(small), config=LMEvaluatorConfig(**FAST))
    short = tiny_model("gpt2", vocab_size=len(tokenizer), n_positions=16)
    with pytest.raises(UserError, match="beyond the model's context of 16 tokens"):
        LMEvaluator(dense=short, data=data, build=builder(short), config=LMEvaluatorConfig(**FAST))
