"""Predicted FLOPs and params equal counting the pruned model, and torch's FlopCounterMode."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from autoprune.llm.counting import count_lm, flop_counter_macs  # noqa: E402
from autoprune.llm.importance import unit_orders  # noqa: E402
from autoprune.llm.prune import prune  # noqa: E402
from autoprune.llm.space import build_lm_space  # noqa: E402
from autoprune.llm.structure import find_structure  # noqa: E402
from autoprune.space.levels import LevelGrid  # noqa: E402
from autoprune.testing.tiny_lm import FAMILIES, tiny_model  # noqa: E402

GRID = LevelGrid.from_step(step=0.125, min_ratio=0.125)
SEQ_LEN = 12


def _candidates(space, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, space.n_levels, size=(n, space.n_groups))
    rows[0] = space.dense_candidate()
    rows[1] = space.sparsest_candidate()  # every block removed: embeddings, final norm, head
    rows[2] = space.sparsest_candidate()
    rows[2][-1] = 0  # only the last MLP left
    rows[3] = space.dense_candidate()
    rows[3][0] = space.n_levels - 1  # first attention removed
    removal = rng.random(size=rows[4:].shape) < 0.25  # plenty of removed sub-blocks in the rest
    rows[4:][removal] = space.n_levels - 1
    return rows


@pytest.mark.parametrize("mode", ["kv_groups", "heads"])
@pytest.mark.parametrize("family", FAMILIES)
def test_predicted_equals_counted(family: str, mode: str) -> None:
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN, attention_mode=mode)
    total = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN, attention_mode=mode, params_with_embeddings=True)
    orders = unit_orders(dense, find_structure(dense), space)
    candidates = _candidates(space, 14, seed=len(family))
    flops = space.cost("flops", candidates)
    params = space.cost("params", candidates)
    params_total = total.cost("params", candidates)
    for i, levels in enumerate(candidates):
        pruned, _ = prune(dense, space, levels, orders=orders)
        counted = count_lm(pruned, SEQ_LEN)
        assert (counted.flops, counted.params_non_embedding, counted.params) == \
            (flops[i], params[i], params_total[i]), f"candidate {i}: {levels}"


@pytest.mark.parametrize("family", FAMILIES)
def test_counting_agrees_with_torch_flop_counter(family: str) -> None:
    """FlopCounterMode (flops = 2 x MACs) on sdpa, with torch's own formula for the CPU kernel."""
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN)
    for levels in _candidates(space, 6, seed=3):
        pruned, _ = prune(dense, space, levels)
        assert flop_counter_macs(pruned, SEQ_LEN) == count_lm(pruned, SEQ_LEN).flops == space.cost("flops", levels)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_eager_attention_products_are_counted_by_plain_flop_counter(family: str) -> None:
    """Eager attention runs the score and value products as matmuls, which FlopCounterMode
    counts with no help: the full T x T products, the causal mask applied afterwards."""
    dense = tiny_model(family)
    dense.set_attn_implementation("eager")
    space = build_lm_space(dense, grid=GRID, seq_len=SEQ_LEN, attention_mode="heads")
    for levels in _candidates(space, 4, seed=5):
        pruned, _ = prune(dense, space, levels)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            pruned(input_ids=torch.zeros(1, SEQ_LEN, dtype=torch.long), use_cache=False)
        assert counter.get_total_flops() == 2 * space.cost("flops", levels)


def test_attention_products_grow_with_the_square_of_the_sequence() -> None:
    dense = tiny_model("llama")
    short = build_lm_space(dense, grid=GRID, seq_len=8)
    long = build_lm_space(dense, grid=GRID, seq_len=16)
    weights = sum(p.numel() for n, p in dense.named_parameters() if n.endswith("proj.weight"))
    weights += dense.config.vocab_size * dense.config.hidden_size  # the (tied) head

    def products(space, tokens: int) -> int:
        return space.dense["flops"] - tokens * weights

    d, heads, layers = 8, 6, 3
    assert products(short, 8) == 2 * 8 * 8 * d * heads * layers
    assert products(long, 16) == 2 * 16 * 16 * d * heads * layers
