"""A language model's stages (runs of decoder blocks) and its feature distortion, against
hand computations with the model's own hidden states, on real tiny Llama and GPT-2 models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from autoprune.evaluation.features import metric_name  # noqa: E402
from autoprune.llm.evaluation import SpaceLMEvaluator  # noqa: E402
from autoprune.llm.features import lm_stage_split  # noqa: E402
from autoprune.llm.lm_evaluator import LMEvaluatorConfig  # noqa: E402
from autoprune.llm.space import build_lm_space  # noqa: E402
from autoprune.llm.structure import find_structure  # noqa: E402
from autoprune.llm.text_data import load_text_data  # noqa: E402
from autoprune.space.levels import LevelGrid  # noqa: E402
from autoprune.space.stage_split import OUTPUT  # noqa: E402
from autoprune.testing.tiny_lm import tiny_model, tiny_tokenizer  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"
PARAGRAPHS = [p for p in PROSE.read_text(encoding="utf-8").split("\n\n") if p.strip()]
GRID = LevelGrid.from_step(step=0.25, min_ratio=0.25)
SEQ_LEN = 32
SAMPLES = 6
#: no latency, CPU, and measured as they are (no retraining) unless a test says otherwise
FAST = dict(measure_latency=False, device="cpu", eval_batch_size=4, fidelity=0, feature_distortion=True)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(PARAGRAPHS)


@pytest.fixture(scope="module")
def data(tokenizer):
    return load_text_data(f"text:{PROSE}", tokenizer, seq_len=SEQ_LEN, val_fraction=0.15, test_fraction=0.1)


def _setup(family: str, tokenizer, data, *, never_prune=(), **config):
    dense = tiny_model(family, seed=0, vocab_size=len(tokenizer)).eval()
    space = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN, never_prune=list(never_prune))
    evaluator = SpaceLMEvaluator(dense=dense, data=data, space=space,
                                 config=LMEvaluatorConfig(**{**FAST, **config}), importance="magnitude")
    return dense, space, evaluator


def _pruned_in_block(space, block: int, level: int = 2) -> np.ndarray:
    levels = space.dense_candidate()
    for g, group in enumerate(space.groups):
        if group.name.startswith(f"layers.{block}."):
            levels[g] = level
    return levels


def _normalised_error(pruned: torch.Tensor, dense: torch.Tensor) -> float:
    return float((pruned - dense).double().pow(2).sum() / (dense.double() - dense.double().mean()).pow(2).sum())


def test_every_decoder_block_is_a_stage_and_blocks_kept_whole_join_the_one_before(tokenizer, data) -> None:
    dense = tiny_model("llama", seed=0, vocab_size=len(tokenizer))
    structure = find_structure(dense)
    space = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN)
    split = lm_stage_split(structure, space)
    assert split.boundaries == ("model.layers.0", "model.layers.1", OUTPUT)
    assert split.owner == (0, 0, 1, 1, 2, 2) and split.carried == (None, None, None)
    # block 1 kept whole: stage 0 runs through it and ends at its output
    kept = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN, never_prune=["layers.1.*"])
    split = lm_stage_split(structure, kept)
    assert split.boundaries == ("model.layers.1", OUTPUT) and split.owner == (0, 0, 1, 1)
    # a single pruned block leaves nothing to divide
    assert lm_stage_split(structure, build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN,
                                                    never_prune=["layers.0.*", "layers.2.*"])) is None
    gpt2 = tiny_model("gpt2", seed=0, vocab_size=len(tokenizer))
    assert lm_stage_split(find_structure(gpt2), build_lm_space(gpt2, grid=GRID, seq_len=SEQ_LEN)).boundaries == (
        "transformer.h.0", "transformer.h.1", OUTPUT)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_distortion_is_the_normalised_error_of_the_hidden_states_where_each_stage_ends(family, tokenizer, data) -> None:
    dense, space, evaluator = _setup(family, tokenizer, data)
    exact = evaluator.run(space.dense_candidate(), fidelity=0, seed=0, eval_samples=SAMPLES).metrics
    boundaries = evaluator.features.split.boundaries
    assert all(exact[metric_name(b)] == pytest.approx(0.0, abs=1e-12) for b in boundaries)
    levels = _pruned_in_block(space, 1)
    result = evaluator.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES)
    tokens = data.val[:SAMPLES]
    with torch.no_grad():
        want = dense(input_ids=tokens, output_hidden_states=True, use_cache=False).hidden_states
        got = result.model(input_ids=tokens, output_hidden_states=True, use_cache=False).hidden_states
    m = result.metrics
    assert m[metric_name(boundaries[0])] == 0.0, "block 1 reads exactly the dense block 0's output"
    # hidden_states[i + 1] is block i's output; the last entry is after the final norm
    assert m[metric_name(boundaries[1])] == pytest.approx(_normalised_error(got[2], want[2]), rel=1e-4)
    assert m[metric_name(OUTPUT)] == pytest.approx(_normalised_error(got[-1], want[-1]), rel=1e-4)
    assert m[metric_name(boundaries[1])] > 0  # pruning block 1 changes its output


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_mimicking_trains_only_the_pruned_blocks_and_brings_their_features_closer(family, tokenizer, data) -> None:
    dense, space, evaluator = _setup(family, tokenizer, data, measurement_training="features", lr=3e-3)
    levels = _pruned_in_block(space, 1)
    boundary = metric_name(evaluator.features.split.boundaries[1])
    before = evaluator.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES, measurement=True)
    after = evaluator.run(levels, fidelity=30, seed=0, eval_samples=SAMPLES, measurement=True)
    assert after.metrics["steps"] == 30
    assert after.metrics[boundary] < 0.8 * before.metrics[boundary]
    assert after.metrics[metric_name(evaluator.features.split.boundaries[0])] == 0.0
    untrained, trained = before.model.state_dict(), after.model.state_dict()
    prefix = "model.layers." if family == "llama" else "transformer.h."
    changed = {k for k in trained if not torch.equal(trained[k], untrained[k])}
    assert changed and all(k.startswith(f"{prefix}1.") for k in changed), sorted(changed)
    # a trial (not a measurement) distils on the task as before
    trial = evaluator.run(levels, fidelity=3, seed=0, eval_samples=SAMPLES)
    assert any(not k.startswith(f"{prefix}1.") and not torch.equal(v, untrained[k])
               for k, v in trial.model.state_dict().items())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("block", [0, 2])
def test_mimicking_the_first_or_last_block_leaves_embeddings_final_norm_and_head_dense(family, block, tokenizer,
                                                                                        data) -> None:
    """Only decoder blocks learn: the (tied) embedding and output layer, GPT-2's position
    embedding and the final norm are the same for every stage's measurement."""
    dense, space, evaluator = _setup(family, tokenizer, data, measurement_training="features", lr=3e-3)
    levels = _pruned_in_block(space, block)
    trained = evaluator.run(levels, fidelity=5, seed=0, eval_samples=SAMPLES, measurement=True)
    assert trained.metrics["steps"] == 5
    untrained = evaluator.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES, measurement=True).model.state_dict()
    prefix = "model.layers." if family == "llama" else "transformer.h."
    changed = {k for k, v in trained.model.state_dict().items() if not torch.equal(v, untrained[k])}
    assert changed and all(k.startswith(f"{prefix}{block}.") for k in changed), sorted(changed)


def test_norms_and_biases_only_mimicking_trains_nothing_else(tokenizer, data) -> None:
    _, space, evaluator = _setup("gpt2", tokenizer, data, measurement_training="features", lr=3e-3,
                                 train_norms_and_biases_only=True)
    levels = _pruned_in_block(space, 1)
    trained = evaluator.run(levels, fidelity=3, seed=0, eval_samples=SAMPLES, measurement=True).model.state_dict()
    untrained = evaluator.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES, measurement=True).model.state_dict()
    changed = {k for k, v in trained.items() if not torch.equal(v, untrained[k])}
    assert changed and all(k.startswith("transformer.h.1.") and (".ln_" in k or k.endswith(".bias"))
                           for k in changed), sorted(changed)


@pytest.mark.parametrize("block", [0, 1, 2])
def test_a_removed_block_has_nothing_to_mimic_and_is_measured_as_it_is(block, tokenizer, data) -> None:
    _, space, evaluator = _setup("llama", tokenizer, data, measurement_training="features")
    levels = _pruned_in_block(space, block, level=space.n_levels - 1)  # attention and MLP removed
    assert space.kept_counts(levels).tolist()[2 * block: 2 * block + 2] == [0, 0]
    result = evaluator.run(levels, fidelity=5, seed=0, eval_samples=SAMPLES, measurement=True)
    assert result.metrics["steps"] == 0
    assert result.metrics[metric_name(OUTPUT)] > 0


def test_only_the_boundaries_of_the_searchers_sub_networks_are_measured(tokenizer, data) -> None:
    """Two runs of blocks: their one inner boundary (after block 0: the balanced split of
    three blocks of 2 groups into 2 runs cuts as early as a tie allows) and the output."""
    _, space, evaluator = _setup("llama", tokenizer, data, feature_sub_networks=2)
    metrics = evaluator.run(_pruned_in_block(space, 0), fidelity=0, seed=0, eval_samples=SAMPLES).metrics
    measured = sorted(k for k in metrics if k.startswith("feature_distortion:"))
    assert measured == [metric_name("model.layers.0"), metric_name(OUTPUT)]


def test_the_config_refuses_mimicking_without_the_features_it_mimics() -> None:
    with pytest.raises(ValueError, match="needs feature_distortion"):
        LMEvaluatorConfig(measurement_training="features")
    with pytest.raises(ValueError, match="measurement_training"):
        LMEvaluatorConfig(measurement_training="tasks", feature_distortion=True)
