"""The language-model search space: groups, levels, GQA modes, budgets that remove every block."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from autoprune.errors import UserError  # noqa: E402
from autoprune.llm.space import (  # noqa: E402
    build_lm_space, check_keeps_a_block, group_attention_mode, removes_every_block,
)
from autoprune.space.levels import LevelGrid  # noqa: E402
from autoprune.space.search_space import SearchSpace  # noqa: E402
from autoprune.testing.tiny_lm import FAMILIES, tiny_model  # noqa: E402

GRID = LevelGrid.from_step(step=0.125, min_ratio=0.125)


def test_groups_are_attention_and_mlp_of_every_block_with_one_level_count() -> None:
    space = build_lm_space(tiny_model("llama"), grid=GRID, seq_len=16)
    assert space.group_names == [f"layers.{i}.{k}" for i in range(3) for k in ("attn", "mlp")]
    assert all(len(g.kept) == space.n_levels == len(GRID.keep_ratios) for g in space.groups)
    for g in space.groups:
        assert g.kept[0] == g.size and g.kept[-1] == 0  # dense first, removal last
        assert all(a >= b for a, b in zip(g.kept, g.kept[1:]))


def test_kv_groups_mode_keeps_whole_key_value_groups() -> None:
    # 6 query heads on 2 key/value heads: units of 3 query heads
    space = build_lm_space(tiny_model("llama"), grid=GRID, seq_len=16, attention_mode="kv_groups")
    attn = space.groups[0]
    assert set(attn.kept) == {6, 3, 0}
    assert group_attention_mode(attn) == "kv_groups"
    assert any(m.endswith("k_proj") for m in attn.members)


def test_heads_mode_keeps_equal_query_heads_per_group() -> None:
    space = build_lm_space(tiny_model("llama"), grid=GRID, seq_len=16, attention_mode="heads")
    attn = space.groups[0]
    assert set(attn.kept) == {6, 4, 2, 0}  # 3, 2 or 1 query heads in each of the 2 groups
    assert group_attention_mode(attn) == "heads"


def test_gpt2_heads_are_single_units_in_either_mode() -> None:
    for mode in ("kv_groups", "heads"):
        space = build_lm_space(tiny_model("gpt2"), grid=GRID, seq_len=16, attention_mode=mode)
        assert space.groups[0].kept == (6, 5, 5, 4, 3, 2, 2, 0)


def test_level_steps_remove_equal_params_within_a_group_kind() -> None:
    """Apart from the removal level, each step of an MLP group removes the same params."""
    space = build_lm_space(tiny_model("qwen2"), grid=GRID, seq_len=16, remove_blocks=True)
    mlp = space.groups[1]
    costs = []
    for level in range(space.n_levels - 1):
        levels = space.dense_candidate()
        levels[1] = level
        costs.append(int(space.cost("params", levels)))
    steps = np.diff(costs)
    assert len(set(steps.tolist())) == 1 and steps[0] < 0
    assert mlp.kept[:-1] == tuple(96 - 12 * i for i in range(space.n_levels - 1))


def test_without_block_removal_no_level_is_zero() -> None:
    space = build_lm_space(tiny_model("mistral"), grid=GRID, seq_len=16, remove_blocks=False)
    assert min(min(g.kept) for g in space.groups) > 0
    assert not removes_every_block(space, space.sparsest_candidate())[0]


def test_params_with_and_without_embeddings() -> None:
    model = tiny_model("qwen2")  # untied head
    without = build_lm_space(model, grid=GRID, seq_len=16)
    with_emb = build_lm_space(model, grid=GRID, seq_len=16, params_with_embeddings=True)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    assert with_emb.dense["params"] - without.dense["params"] == 2 * vocab * hidden
    assert with_emb.dense["params"] == sum(p.numel() for p in model.parameters())
    assert with_emb.dense["flops"] == without.dense["flops"]


@pytest.mark.parametrize("family", FAMILIES)
def test_space_survives_json_round_trip(family: str) -> None:
    space = build_lm_space(tiny_model(family), grid=GRID, seq_len=32)
    again = SearchSpace.from_dict(space.to_dict())
    rng = np.random.default_rng(1)
    candidates = rng.integers(0, space.n_levels, size=(20, space.n_groups))
    for resource in ("flops", "params"):
        assert np.array_equal(space.cost(resource, candidates), again.cost(resource, candidates))
    assert [g.members for g in again.groups] == [g.members for g in space.groups]


def test_never_prune_keeps_groups_dense_and_priced() -> None:
    model = tiny_model("llama")
    full = build_lm_space(model, grid=GRID, seq_len=16)
    part = build_lm_space(model, grid=GRID, seq_len=16, never_prune=["layers.0.*"])
    assert part.group_names == full.group_names[2:]
    assert part.dense == full.dense
    with pytest.raises(UserError, match="names no group"):
        build_lm_space(model, grid=GRID, seq_len=16, never_prune=["layers.9.*"])
    with pytest.raises(UserError, match="nothing is left"):
        build_lm_space(model, grid=GRID, seq_len=16, never_prune=["layers.*"])


def test_bad_options_are_user_errors() -> None:
    model = tiny_model("llama")
    with pytest.raises(UserError, match="attention mode"):
        build_lm_space(model, grid=GRID, seq_len=16, attention_mode="some")
    with pytest.raises(UserError, match="beyond the model's context of 256"):
        build_lm_space(model, grid=GRID, seq_len=257)
    with pytest.raises(UserError, match="positive integer"):
        build_lm_space(model, grid=GRID, seq_len=0)


def test_unsupported_architecture_is_named() -> None:
    from torch import nn

    class Other(nn.Module):
        pass

    with pytest.raises(UserError, match="cannot prune a Other.*llama, qwen2, mistral, gpt2"):
        build_lm_space(Other(), grid=GRID, seq_len=16)


def test_a_budget_that_removes_every_block_is_refused() -> None:
    space = build_lm_space(tiny_model("llama"), grid=GRID, seq_len=16)
    sparsest = space.sparsest_candidate()
    assert removes_every_block(space, sparsest)[0]
    assert not removes_every_block(space, space.dense_candidate())[0]
    floor = {r: float(space.cost(r, sparsest)) for r in ("flops", "params")}
    with pytest.raises(UserError, match="no attention or MLP block"):
        check_keeps_a_block(space, {"params": floor["params"]})
    # the smallest single block fits exactly at its own cost
    cheapest = min(float(space.cost("params", np.where(np.arange(space.n_groups) == g, space.n_levels - 2, sparsest)))
                   for g in range(space.n_groups))
    check_keeps_a_block(space, {"params": cheapest})
    with pytest.raises(UserError):
        check_keeps_a_block(space, {"params": cheapest - 1})
    check_keeps_a_block(space, {"flops": float(space.dense["flops"])})
