"""Grouped convolutions, layer scales, attention, auxiliary heads and layers no kind counts:
priced exactly (the cost model equals the reference counter and torch's FlopCounterMode on
materialised candidates) or refused in one sentence that names everything at once.

The models are small versions of the blocks torchvision's classifiers are made of, so the
default run needs no torchvision (tests/space/test_torchvision_models.py runs the real ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.space.analysis import build_search_space
from autoprune.space.counting import count, independent_count
from autoprune.space.level_database import LevelDatabase
from autoprune.space.levels import LevelGrid
from autoprune.space.materialize import materialize
from autoprune.space.search_space import SearchSpace

GRID = LevelGrid.from_step(step=0.25, min_ratio=0.25)


def _assert_exact(model: nn.Module, space: SearchSpace, x: torch.Tensor, *, n_candidates: int, classes: int,
                  never_prune: list[str] = ()) -> list[nn.Module]:
    """Every candidate's predicted FLOPs and params equal both counts, and it runs in eval and train mode."""
    dense = independent_count(model, x)
    assert space.dense == {"flops": dense.flops, "params": dense.params}
    rng = np.random.default_rng(0)
    candidates = rng.integers(0, space.n_levels, size=(n_candidates, space.n_groups))
    candidates[0] = space.sparsest_candidate()
    built = []
    for levels in candidates:
        pruned, _ = materialize(model, space, levels, x, never_prune=list(never_prune))
        predicted = (space.cost("flops", levels), space.cost("params", levels))
        ours, torchs = count(pruned, x), independent_count(pruned, x)
        assert (ours.flops, ours.params) == predicted, levels
        assert (torchs.flops, torchs.params) == predicted, levels
        batch = torch.randn(2, *x.shape[1:])
        assert pruned.eval()(batch).shape[-1] == classes
        out = pruned.train()(batch)
        assert all(o.shape == (2, classes) for o in (out if isinstance(out, tuple) else (out,)))
        built.append(pruned.eval())
    return built


class NeXtBlock(nn.Module):
    """ResNeXt's bottleneck: 1x1, grouped 3x3, 1x1, with a residual sum."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False),
                                     nn.BatchNorm2d(width), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.expand(self.grouped(self.reduce(x))))


def _resnext() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         NeXtBlock(16, 32, groups=4), NeXtBlock(16, 24, groups=8),
                         nn.Conv2d(16, 32, 3, padding=1, groups=2), nn.ReLU(),  # grouped, dense in and out
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()


def test_grouped_convolutions_keep_their_group_count_and_are_priced_exactly() -> None:
    model, x = _resnext(), torch.randn(1, 3, 8, 8)
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    blocks = {g.name: g.channel_groups for g in space.groups}
    assert blocks["3.reduce.0"] == 4 and blocks["3.grouped.0"] == 4 and blocks["4.grouped.0"] == 8
    for group in space.groups:
        assert all(k % group.channel_groups == 0 and k > 0 for k in group.kept), group
    pruned = _assert_exact(model, space, x, n_candidates=6, classes=5)[0]  # the sparsest first
    conv, kept = pruned[3].grouped[0], {g.name: g.kept[-1] for g in space.groups}
    assert (conv.groups, conv.in_channels, conv.out_channels) == (4, kept["3.reduce.0"], kept["3.grouped.0"]) == (4, 8, 8)


def test_the_level_database_assembles_grouped_convolutions_as_materialize_does() -> None:
    model, x = _resnext(), torch.randn(1, 3, 8, 8)
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    database = LevelDatabase.build(model, space, x, never_prune=[])  # checked against materialize inside
    levels = np.random.default_rng(1).integers(0, space.n_levels, space.n_groups)
    assembled, _ = database.assemble(levels)
    expected, _ = materialize(model, space, levels, x, never_prune=[])
    assert torch.equal(assembled(x), expected(x))


class ScaledBlock(nn.Module):
    """ConvNeXt's block: depthwise conv, channels-last MLP, a learnt per-channel layer scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.down(torch.nn.functional.gelu(self.up(y))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


def test_a_layer_scale_pruned_with_its_channels_is_priced_with_them() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 2, stride=2), ScaledBlock(16), ScaledBlock(16),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    x = torch.randn(1, 3, 8, 8)
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    pruned = _assert_exact(model, space, x, n_candidates=5, classes=4)[0]
    stream = next(g for g in space.groups if "1.dw" in g.members)
    assert pruned[1].layer_scale.shape == (stream.kept[-1], 1, 1)  # pruned, and priced: params above are exact


class TinyViT(nn.Module):
    """Patches embedded by a linear layer, one pre-norm encoder block with nn.MultiheadAttention
    and an MLP, mean-pooled into a head; the width lives in the layers, nowhere else."""

    def __init__(self, dim: int = 32, heads: int = 4, classes: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(48, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        h = self.embed(tokens)
        y = self.norm1(h)
        h = h + self.attention(y, y, y, need_weights=False)[0]
        h = h + self.mlp(self.norm2(h))
        return self.head(h.mean(dim=1))


def test_multihead_attention_is_pruned_by_whole_heads_and_priced_with_its_projections_and_products() -> None:
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 3, 12, 12)  # 9 tokens
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    stream = next(g for g in space.groups if "attention" in g.members)
    assert stream.unit == 8 and stream.channel_groups == 1  # whole heads of 8 channels
    assert stream.kept == (32, 24, 16, 8)
    dense = independent_count(model, x)
    tokens, width = 9, 32
    assert count(model, x).flops == dense.flops  # attention counted by its kind, projections and products
    assert dense.per_module["attention"] == tokens * 4 * width * width + 2 * tokens * tokens * width
    pruned = _assert_exact(model, space, x, n_candidates=6, classes=6)[0]
    attention = pruned.attention
    assert (attention.num_heads, attention.head_dim, attention.embed_dim) == (1, 8, 8)  # one head left, as wide


def test_the_heads_kept_are_the_most_important_whole_heads() -> None:
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 3, 12, 12)
    with torch.no_grad():  # head 2 carries the stream's largest weights everywhere
        for tensor in (model.embed.weight, model.embed.bias, model.mlp[2].weight, model.mlp[2].bias):
            tensor[16:24] *= 50
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    stream = space.group_names.index("embed")
    levels = space.dense_candidate()
    levels[stream] = space.n_levels - 1
    pruned, kept = materialize(model, space, levels, x, never_prune=[])
    assert kept["embed"] == list(range(16, 24))
    dense_rows = model.attention.in_proj_weight.detach()[[*range(16, 24), *range(48, 56), *range(80, 88)]][:, 16:24]
    assert torch.equal(pruned.attention.in_proj_weight.detach(), dense_rows)  # its query, key and value rows


class AuxNet(nn.Module):
    """A classifier with an auxiliary head that runs only in training mode, as in GoogLeNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.aux = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        out = self.fc(self.pool(self.body(s)).flatten(1))
        return (out, self.aux(s)) if self.training else out


def test_auxiliary_heads_are_pruned_with_what_feeds_them_and_keep_their_classes() -> None:
    torch.manual_seed(0)
    model, x = AuxNet().eval(), torch.randn(1, 3, 8, 8)
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    stem = next(g for g in space.groups if g.name == "stem.0")
    assert "aux.0" in stem.members and "aux.0" in space.group_names  # the head's input follows the stem
    assert "aux.4" not in space.group_names and "fc" not in space.group_names  # class outputs stay
    pruned = _assert_exact(model, space, x, n_candidates=4, classes=3)[0]
    assert pruned.aux[0].in_channels == stem.kept[-1]


class BranchGRU(nn.Module):
    """Two convolution branches, each read row by row by a GRU Torch-Pruning cannot prune into."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.right = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.gru_left, self.gru_right = nn.GRU(8 * 8, 16, batch_first=True), nn.GRU(8 * 8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for conv, gru in ((self.left, self.gru_left), (self.right, self.gru_right)):
            rows = conv(x).permute(0, 2, 1, 3).flatten(2)
            out = out + gru(rows)[0][:, -1]
        return self.head(out)


def test_one_refusal_lists_every_group_at_once_and_its_never_prune_line_works_when_pasted() -> None:
    torch.manual_seed(0)
    model, x = BranchGRU().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(UserError) as refused:
        build_search_space(model, x, grid=GRID, never_prune=[])
    message = str(refused.value)
    assert message.startswith("autoprune cannot prune 2 parts of this model")
    assert "the group of layer 'left.2' (Conv2d)" in message and "the group of layer 'right.2' (Conv2d)" in message
    line = message.split("--space file: ")[1]
    assert line == "never_prune: [left.2, right.2]"
    import yaml

    never_prune = yaml.safe_load(line)["never_prune"]
    space = build_search_space(model, x, grid=GRID, never_prune=never_prune)
    assert sorted(space.group_names) == ["left.0", "right.0"]
    gru_macs = independent_count(model, x).per_module["gru_left"]
    assert gru_macs > 0 and count(model, x).unsupported == ["gru_left (GRU)", "gru_right (GRU)"]
    _assert_exact(model, space, x, n_candidates=3, classes=4, never_prune=never_prune)  # GRUs counted by torch


class Gram(nn.Module):
    """A parameter-free layer multiplying two activations (attention scores written out)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(2)
        return f @ f.transpose(1, 2)


def test_a_product_of_activations_is_refused_in_bounded_time_instead_of_exhausting_memory() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), Gram(), nn.Flatten(), nn.Linear(64, 4)).eval()
    with pytest.raises(UserError, match=r"^Torch-Pruning's channel analysis of this model grew past 2,000,000 "
                                        r"channel indices for one group \(a product of two activations.*"
                                        r"so use another model\.$"):
        build_search_space(model, torch.randn(1, 3, 6, 6), grid=GRID, never_prune=[])


class Blur(nn.Module):
    """A fixed per-channel blur (a buffer, not a parameter): arithmetic no layer kind counts."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.full((channels, 1, 3, 3), 1 / 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


def test_arithmetic_no_kind_counts_is_refused_naming_the_layer_rather_than_mispriced() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), Blur(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with pytest.raises(UserError, match=r"^autoprune's cost model disagrees with torch's own count on the dense model "
                                        r"\(MACs [\d,]+ against [\d,]+, params [\d,]+ against [\d,]+\) in layer '1' "
                                        r"\(Blur\); that layer kind is not supported yet, so use another model\.$"):
        build_search_space(model, torch.randn(1, 3, 6, 6), grid=GRID, never_prune=[])


class Exhausting(nn.Module):
    """A layer whose traced forward runs out of memory (as Swin's did inside Torch-Pruning)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # Torch-Pruning traces with autograd on
            self.calls += 1
            raise MemoryError()
        return self.conv(x)


def test_running_out_of_memory_while_tracing_is_one_sentence_and_not_tried_again() -> None:
    model = nn.Sequential(Exhausting(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()
    with pytest.raises(UserError, match=r"^Torch-Pruning ran out of memory tracing this model's channels at input "
                                        r"shape \(1, 3, 6, 6\); .* use a smaller input or another model\.$"):
        build_search_space(model, torch.randn(1, 3, 6, 6), grid=GRID, never_prune=[])
    assert model[0].calls == 1


def test_latency_tables_time_grouped_convolutions_at_the_counts_the_grid_allows() -> None:
    from autoprune.evaluation.latency_table import measure_tables
    from autoprune.space.analysis import analyse

    model, x = _resnext(), torch.randn(1, 3, 8, 8)
    space, couplings = analyse(model, x, grid=GRID, never_prune=[])
    tables = {t.name: t for t in measure_tables(model, space, couplings, x, batch_size=2, repeats=1)}
    grouped = tables["3.grouped.0"]
    assert grouped.table.shape == (space.n_levels, space.n_levels) and np.all(grouped.table > 0)
