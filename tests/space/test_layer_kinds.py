"""Layer kinds: RMSNorm and embeddings priced and counted exactly, and a new kind is one entry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from autoprune.evaluation.latency_table import measure_tables
from autoprune.space.analysis import analyse, build_search_space
from autoprune.space.counting import count
from autoprune.space.layer_kinds import UNKNOWN, LayerKind, PricedLayer, kind_of, register, unregister
from autoprune.space.layer_kinds.linear import LINEAR
from autoprune.space.level_database import LevelDatabase
from autoprune.space.levels import LevelGrid
from autoprune.space.materialize import materialize
from autoprune.space.search_space import SearchSpace

GRID = LevelGrid.from_step(step=0.25, min_ratio=0.25)


class TinyLM(nn.Module):
    """Token embedding, two pre-norm MLP blocks on a residual stream, RMSNorm, vocabulary head."""

    def __init__(self, vocab: int = 40, dim: int = 16, hidden: int = 24) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norms = nn.ModuleList([nn.RMSNorm(dim, eps=1e-6) for _ in range(2)])
        self.ups = nn.ModuleList([nn.Linear(dim, hidden) for _ in range(2)])
        self.downs = nn.ModuleList([nn.Linear(hidden, dim, bias=False) for _ in range(2)])
        self.final_norm = nn.RMSNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for norm, up, down in zip(self.norms, self.ups, self.downs):
            h = h + down(F.gelu(up(norm(h))))
        return self.head(self.final_norm(h))


def _assert_priced_as_counted(model: nn.Module, space: SearchSpace, x: torch.Tensor, n_candidates: int) -> None:
    rng = np.random.default_rng(0)
    candidates = rng.integers(0, space.n_levels, size=(n_candidates, space.n_groups))
    candidates[0] = space.sparsest_candidate()
    for levels in candidates:
        pruned, _ = materialize(model, space, levels, x, never_prune=[])
        counted = count(pruned, x)
        assert counted.unsupported == []
        assert (counted.flops, counted.params) == (space.cost("flops", levels), space.cost("params", levels)), levels


@pytest.fixture(scope="module")
def tiny_lm() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyLM().eval(), torch.randint(0, 40, (1, 7))


def test_rmsnorm_and_embedding_pruned_with_the_residual_stream_are_priced_as_counted(tiny_lm) -> None:
    model, x = tiny_lm
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    dense = count(model, x)
    assert dense.unsupported == []  # RMSNorm was unsupported before it had a kind
    assert space.dense == {"flops": dense.flops, "params": dense.params}
    stream = next(g for g in space.groups if "embed" in g.members)  # the residual stream's group
    assert {"norms.0", "norms.1", "final_norm"} <= set(stream.members)
    _assert_priced_as_counted(model, space, x, n_candidates=12)

    pruned, _ = materialize(model, space, space.sparsest_candidate(), x, never_prune=[])
    kept = stream.kept[-1]
    assert pruned.embed.weight.shape == (40, kept) and pruned.embed.embedding_dim == kept
    assert pruned.final_norm.normalized_shape == (kept,)  # set by the RMSNorm pruner, so the model runs
    assert pruned(x).shape == (1, 7, 40)


def test_level_database_assembles_rmsnorm_and_embedding_from_token_ids(tiny_lm) -> None:
    model, x = tiny_lm
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    database = LevelDatabase.build(model, space, x, never_prune=[])  # verified against materialize
    levels = space.sparsest_candidate()
    assembled, _ = database.assemble(levels)
    expected, _ = materialize(model, space, levels, x, never_prune=[])
    for name in ("embed", "norms.0", "final_norm"):
        assert repr(assembled.get_submodule(name)) == repr(expected.get_submodule(name))
    assert torch.equal(assembled(x), expected(x))


def test_latency_tables_time_token_layers_with_features_last(tiny_lm) -> None:
    model, x = tiny_lm
    space, couplings = analyse(model, x, grid=GRID, never_prune=[])
    tables = {t.name: t for t in measure_tables(model, space, couplings, x, batch_size=2, repeats=1)}
    assert set(tables) == {"embed", "norms.0", "norms.1", "ups.0", "ups.1", "downs.0", "downs.1",
                           "final_norm", "head"}
    stream = tables["embed"].out_group
    assert stream >= 0 and tables["final_norm"].out_group == stream and tables["final_norm"].in_group == -1
    assert tables["ups.0"].in_group == stream and tables["ups.0"].table.shape == (space.n_levels, space.n_levels)
    assert all(np.all(t.table > 0) for t in tables.values())


# -- a made-up kind: one class for the layer's rules, one register call ----------------


class ScaledLinear(nn.Module):
    """A linear layer without bias whose outputs are scaled per channel by a learnt vector."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)
        self.scale = nn.Parameter(torch.rand(out_features) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) * self.scale


class ScaledLinearPruner(tp.pruner.BasePruningFunc):
    def prune_out_channels(self, layer: ScaledLinear, idxs: Sequence[int]) -> nn.Module:
        keep = [i for i in range(layer.out_features) if i not in set(idxs)]
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        layer.scale = self._prune_parameter_and_grad(layer.scale, keep, 0)
        layer.out_features = len(keep)
        return layer

    def prune_in_channels(self, layer: ScaledLinear, idxs: Sequence[int]) -> nn.Module:
        keep = [i for i in range(layer.in_features) if i not in set(idxs)]
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        layer.in_features = len(keep)
        return layer

    def get_out_channels(self, layer: ScaledLinear) -> int:
        return layer.out_features

    def get_in_channels(self, layer: ScaledLinear) -> int:
        return layer.in_features


class ScaledLinearKind(LayerKind):
    types = (ScaledLinear,)
    root = True
    tp_pruner = ScaledLinearPruner()

    def position_channels(self, module: nn.Module) -> int:
        return module.out_features

    def macs(self, module: nn.Module, positions: int) -> int:
        return positions * module.out_features * module.in_features

    def price(self, layer: PricedLayer, *, flops, params) -> None:
        n_in, n_out = layer.n_in(layer.module.in_features), layer.n_out(layer.module.out_features)
        params.add_product(n_in, n_out, 1)
        params.add_count(n_out, 1)  # the scale vector
        flops.add_product(n_in, n_out, layer.positions)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        module.out_features, module.in_features = module.weight.shape


@pytest.fixture
def scaled_linear_kind() -> Iterator[LayerKind]:
    kind = register(ScaledLinearKind())
    yield kind
    unregister(kind)


def _scaled_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ScaledLinear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                         ScaledLinear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()


def test_an_unknown_layer_is_reported_by_counting() -> None:
    assert kind_of(ScaledLinear(2, 2)) is UNKNOWN
    assert count(_scaled_net(), torch.randn(1, 8)).unsupported == ["0 (ScaledLinear)", "4 (ScaledLinear)"]


def test_a_registered_kind_is_traced_priced_counted_and_reshaped(scaled_linear_kind) -> None:
    model, x = _scaled_net(), torch.randn(1, 8)
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    assert sorted(space.group_names) == ["0", "2", "4"]  # the new kind roots groups of its own
    dense = count(model, x)
    assert dense.unsupported == []
    assert space.dense == {"flops": dense.flops, "params": dense.params}
    _assert_priced_as_counted(model, space, x, n_candidates=12)
    database = LevelDatabase.build(model, space, x, never_prune=[])
    assembled, _ = database.assemble(space.sparsest_candidate())
    kept = {g.name: g.kept[-1] for g in space.groups}
    assert (assembled[0].out_features, assembled[4].in_features) == (kept["0"], kept["2"])


def test_registry_refuses_a_taken_type_and_prefers_the_most_specific_class() -> None:
    class Sub(nn.Linear):
        pass

    class SubKind(LayerKind):
        types = (Sub,)

    with pytest.raises(ValueError, match="already has a layer kind"):
        register(type("Twice", (LayerKind,), {"types": (nn.Linear,)})())
    sub_kind = register(SubKind())
    try:
        assert kind_of(Sub(2, 2)) is sub_kind and kind_of(nn.Linear(2, 2)) is LINEAR
    finally:
        unregister(sub_kind)
    assert kind_of(Sub(2, 2)) is LINEAR


@pytest.mark.parametrize("slopes", [1, 8])
def test_prelu_in_a_group_is_priced_as_counted(slopes: int) -> None:
    """A single shared slope is left whole by pruning (it used to be priced as if pruned)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.PReLU(slopes), nn.Conv2d(8, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(1, 3, 8, 8)
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    assert any("2" in g.members for g in space.groups)  # the PReLU goes with the first convolution
    _assert_priced_as_counted(model, space, x, n_candidates=6)
