"""Physical pruning of causal LMs: same function as masking, generate with a cache, rebuild, assembly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors.torch import load_model, save_model  # noqa: E402
from torch import nn  # noqa: E402

from autoprune.errors import UserError  # noqa: E402
from autoprune.llm.assembly import LMLevelDatabase  # noqa: E402
from autoprune.llm.importance import unit_orders  # noqa: E402
from autoprune.llm.prune import RemovedAttention, RemovedMLP, prune, prune_to_indices  # noqa: E402
from autoprune.llm.space import build_lm_space, parse_group_name  # noqa: E402
from autoprune.llm.structure import find_structure  # noqa: E402
from autoprune.space.levels import LevelGrid  # noqa: E402
from autoprune.testing.tiny_lm import FAMILIES, tiny_model  # noqa: E402

GRID = LevelGrid.from_step(step=0.125, min_ratio=0.125)
MODES = ["kv_groups", "heads"]


def _ids(batch: int = 2, tokens: int = 10, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, 128, (batch, tokens), generator=generator)  # no special tokens


def _candidates(space, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, space.n_levels, size=(n, space.n_groups))
    rows[0] = space.dense_candidate()
    rows[0][0] = space.n_levels - 1  # layer 0's attention removed: the cache's length lives there
    rows[1] = space.sparsest_candidate()
    rows[1][-1] = 1
    return rows


def _masked(dense: nn.Module, keep: dict[str, list[int]]) -> nn.Module:
    """A dense copy whose removed heads/neurons write nothing: their output weights zeroed."""
    import copy

    model = copy.deepcopy(dense)
    structure = find_structure(model)
    with torch.no_grad():
        for name, kept in keep.items():
            index, kind = parse_group_name(name)
            block = structure.blocks[index]
            if kind == "attn":
                attn = model.get_submodule(block.attn)
                out = attn.c_proj if structure.layout == "gpt2" else attn.o_proj
                weight = out.weight if structure.layout == "gpt2" else out.weight.T  # (in, out)
                mask = torch.ones(block.num_heads, dtype=torch.bool)
                mask[kept] = False
                weight.view(block.num_heads, block.head_dim, -1)[mask] = 0
            else:
                mlp = model.get_submodule(block.mlp)
                out = mlp.c_proj if structure.layout == "gpt2" else mlp.down_proj
                weight = out.weight if structure.layout == "gpt2" else out.weight.T
                mask = torch.ones(block.intermediate, dtype=torch.bool)
                mask[kept] = False
                weight[mask] = 0
            if not kept and out.bias is not None:
                out.bias.zero_()
    return model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_computes_what_the_masked_dense_model_computes(family: str, mode: str) -> None:
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=16, attention_mode=mode)
    orders = unit_orders(dense, find_structure(dense), space)
    ids = _ids()
    for levels in _candidates(space, 6, seed=1):
        pruned, keep = prune(dense, space, levels, orders=orders)
        assert {k: len(v) for k, v in keep.items()} == {
            g.name: int(c) for g, c in zip(space.groups, space.kept_counts(levels)) if c < g.size}
        with torch.no_grad():
            got = pruned(ids).logits
            want = _masked(dense, keep)(ids).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dense_model_is_not_modified() -> None:
    dense = tiny_model("qwen2")
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    space = build_lm_space(dense, grid=GRID, seq_len=16)
    prune(dense, space, space.sparsest_candidate())
    assert all(torch.equal(before[k], v) for k, v in dense.state_dict().items())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_cache_on_non_uniform_layers(family: str, mode: str) -> None:
    """Greedy generation with the key/value cache gives what recomputing every step gives,
    with layers of different head counts and removed sub-blocks (layer 0's included)."""
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=16, attention_mode=mode)
    ids = _ids(batch=2, tokens=6, seed=2)
    for levels in _candidates(space, 4, seed=2):
        pruned, _ = prune(dense, space, levels)
        cached = pruned.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = pruned.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
        assert cached.shape == (2, 14)
        assert torch.equal(cached, uncached), f"{levels}"


def test_removed_sub_blocks_hold_no_parameters() -> None:
    dense = tiny_model("llama")
    space = build_lm_space(dense, grid=GRID, seq_len=16)
    levels = space.dense_candidate()
    levels[2] = levels[3] = space.n_levels - 1  # block 1: attention and MLP
    pruned, keep = prune(dense, space, levels)
    layer = pruned.model.layers[1]
    assert keep == {"layers.1.attn": [], "layers.1.mlp": []}
    assert isinstance(layer.self_attn, RemovedAttention) and isinstance(layer.mlp, RemovedMLP)
    assert isinstance(layer.input_layernorm, nn.Identity) and isinstance(layer.post_attention_layernorm, nn.Identity)
    assert list(layer.parameters()) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuild_from_indices_loads_saved_weights(family: str, tmp_path) -> None:
    """A fresh model of the same config pruned to the saved indices takes the safetensors."""
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=16, attention_mode="heads")
    levels = _candidates(space, 3, seed=4)[2]
    levels[1] = space.n_levels - 1
    pruned, keep = prune(dense, space, levels)
    save_model(pruned, str(tmp_path / "model.safetensors"))  # handles the tied embedding
    fresh = prune_to_indices(tiny_model(family, seed=9), keep)
    missing, unexpected = load_model(fresh, str(tmp_path / "model.safetensors"))
    assert (missing, unexpected) == (set(), set()) or (list(missing), list(unexpected)) == ([], [])
    ids = _ids(seed=3)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, pruned(ids).logits)
    assert torch.equal(fresh.generate(ids[:1, :4], max_new_tokens=5, do_sample=False, pad_token_id=0),
                       pruned.generate(ids[:1, :4], max_new_tokens=5, do_sample=False, pad_token_id=0))


def test_bad_indices_are_refused() -> None:
    model = tiny_model("llama")
    with pytest.raises(UserError, match="unknown group"):
        prune_to_indices(model, {"layers.0.ffn": [1]})
    with pytest.raises(UserError, match="block 7"):
        prune_to_indices(model, {"layers.7.mlp": [1]})
    with pytest.raises(UserError, match="sorted distinct"):
        prune_to_indices(model, {"layers.0.mlp": [3, 1]})
    with pytest.raises(UserError, match="grouped-query"):
        prune_to_indices(model, {"layers.0.attn": [0, 1, 3]})  # 2 heads read kv head 0, 1 reads kv head 1


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_assembly_equals_pruning_and_owns_its_weights(family: str) -> None:
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=16)
    database = LMLevelDatabase.build(dense, space)
    ids = _ids(seed=5)
    for levels in _candidates(space, 5, seed=6):
        expected, expected_keep = prune(dense, space, levels)
        got, got_keep = database.assemble(levels)
        assert got_keep == expected_keep
        want, have = expected.state_dict(), got.state_dict()
        assert want.keys() == have.keys()
        assert all(torch.equal(want[k], have[k]) for k in want)
        with torch.no_grad():
            assert torch.equal(got(ids).logits, expected(ids).logits)
            for p in got.parameters():  # training the assembled model must not touch the database
                p.add_(1.0)
        again, _ = database.assemble(levels)
        assert all(torch.equal(want[k], v) for k, v in again.state_dict().items())
    if dense.lm_head.weight is dense.get_input_embeddings().weight:
        assert got.lm_head.weight is got.get_input_embeddings().weight  # tying survives assembly


@pytest.mark.parametrize("share", [0.0, 0.1, None])
def test_the_slice_cache_stays_within_its_memory_and_assembles_the_same(share: float | None) -> None:
    dense = tiny_model("llama")
    space = build_lm_space(dense, grid=GRID, seq_len=16)
    model_bytes = sum(p.nbytes for p in dense.parameters())
    max_bytes = None if share is None else int(share * model_bytes)
    database = LMLevelDatabase.build(dense, space, max_bytes=max_bytes)
    limit = model_bytes if max_bytes is None else max_bytes
    for levels in _candidates(space, 12, seed=8):
        expected, _ = prune(dense, space, levels)
        got, _ = database.assemble(levels)
        assert all(torch.equal(expected.state_dict()[k], v) for k, v in got.state_dict().items())
        held = sum(t.nbytes for slices in database._sliced.values() for t in slices.values())
        assert held == database.cached_bytes <= limit
    assert (database.cached_bytes > 0) == (share != 0.0)


def test_activation_importance_weighs_weights_by_calibration_activations() -> None:
    dense = tiny_model("llama")
    space = build_lm_space(dense, grid=GRID, seq_len=16)
    structure = find_structure(dense)
    calibration = _ids(batch=5, tokens=16, seed=7)
    with pytest.raises(UserError, match="calibration"):
        unit_orders(dense, structure, space, importance="activation")
    orders = unit_orders(dense, structure, space, importance="activation", calibration=calibration)
    # independent computation for block 2's MLP: sum of |W| * ||x_in|| over its coupled weights
    mlp = dense.model.layers[2].mlp
    inputs: dict[str, torch.Tensor] = {}
    hooks = [getattr(mlp, n).register_forward_hook(
        lambda m, a, o, n=n: inputs.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1])))
        for n in ("gate_proj", "down_proj")]
    with torch.no_grad():
        dense(calibration)
    for h in hooks:
        h.remove()
    x_in = torch.cat(inputs["gate_proj"]).double().norm(dim=0)
    x_mid = torch.cat(inputs["down_proj"]).double().norm(dim=0)
    score = ((mlp.gate_proj.weight.double().abs() * x_in).sum(1) + (mlp.up_proj.weight.double().abs() * x_in).sum(1)
             + (mlp.down_proj.weight.double().abs() * x_mid[None, :]).sum(0))
    expected = torch.argsort(score, descending=True, stable=True).tolist()
    assert list(orders["layers.2.mlp"].order[0]) == expected
    magnitude = unit_orders(dense, structure, space)
    assert magnitude["layers.2.mlp"].order != orders["layers.2.mlp"].order


@pytest.mark.parametrize("family", FAMILIES)
def test_manual_decoding_with_cache_after_removing_layer_zero_attention(family: str) -> None:
    """Feeding one token at a time with the returned cache (as a decode-latency measurement
    does) places each token after the cached ones: the model reads that length from the
    cache's layer 0, whose attention is removed here."""
    dense = tiny_model(family)
    space = build_lm_space(dense, grid=GRID, seq_len=16)
    levels = space.dense_candidate()
    levels[0] = space.n_levels - 1
    pruned, _ = prune(dense, space, levels)
    ids = _ids(batch=1, tokens=9, seed=8)
    with torch.no_grad():
        full = pruned(ids).logits
        out = pruned(ids[:, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, 9):
            out = pruned(ids[:, t:t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
