"""torchvision's own classifiers, small configurations at tiny inputs: built and priced exactly
(against torch's FlopCounterMode and the parameter count, on random candidates, run in eval
and train mode after pruning) or refused in one sentence.

The full list (``torchvision.models.list_models``) is the slow test at the bottom and
``experiments/torchvision_survey.py``; torchvision comes with the ``test`` extra, a CUDA
build made importable beside CPU torch by :mod:`autoprune.torchvision_compat`."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autoprune.errors import UserError
from autoprune.space.analysis import build_search_space
from autoprune.space.counting import independent_count
from autoprune.space.level_database import LevelDatabase
from autoprune.space.levels import LevelGrid
from autoprune.space.materialize import materialize
from autoprune.torchvision_compat import make_torchvision_importable

make_torchvision_importable()
torchvision = pytest.importorskip("torchvision")

GRID = LevelGrid.from_step(step=0.25, min_ratio=0.25)
CLASSES = 10


def _exact(model: torch.nn.Module, side: int, *, never_prune: list[str] = (), n_candidates: int = 3) -> int:
    """Build the space, hold random candidates to the independent count, run them in both
    modes; returns the number of groups."""
    x = torch.randn(1, 3, side, side)
    space = build_search_space(model, x, grid=GRID, never_prune=list(never_prune))
    rng = np.random.default_rng(0)
    for i in range(n_candidates):
        levels = space.sparsest_candidate() if i == 0 else rng.integers(0, space.n_levels, space.n_groups)
        pruned, _ = materialize(model, space, levels, x, never_prune=list(never_prune))
        counted = independent_count(pruned, x)
        assert (counted.flops, counted.params) == (space.cost("flops", levels), space.cost("params", levels))
        batch = torch.randn(2, 3, side, side)
        with torch.no_grad():
            assert pruned.eval()(batch).shape == (2, CLASSES)
        out = pruned.train()(batch)
        assert (out if isinstance(out, torch.Tensor) else out[0]).shape == (2, CLASSES)
    return space.n_groups


def test_a_resnext_is_pruned_per_convolution_group_and_priced_exactly() -> None:
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=CLASSES, groups=4, width_per_group=4).eval()
    assert _exact(model, 32) > 0


def test_a_regnet_with_squeeze_excitation_is_priced_exactly() -> None:
    from torchvision.models.regnet import BlockParams, RegNet

    torch.manual_seed(0)
    params = BlockParams.from_init_params(depth=3, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    assert _exact(RegNet(params, num_classes=CLASSES).eval(), 32) > 0


def test_a_convnext_layer_scale_is_priced() -> None:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=CLASSES).eval()
    assert _exact(model, 32) > 0


def test_a_vision_transformer_loses_whole_heads_and_runs_in_both_modes_after_pruning() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=CLASSES).eval()
    x = torch.randn(1, 3, 32, 32)
    assert _exact(model, 32) == 3  # the stream (heads) and the two MLPs, no never_prune needed
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    stream = space.groups[space.group_names.index("conv_proj")]
    assert (stream.unit, stream.kept) == (8, (32, 24, 16, 8))
    assert "encoder.layers.encoder_layer_1.self_attention" in stream.members
    levels = space.dense_candidate()
    levels[space.group_names.index("conv_proj")] = 2
    pruned, _ = materialize(model, space, levels, x, never_prune=[])
    for layer in pruned.encoder.layers:
        attention = layer.self_attention
        assert (attention.num_heads, attention.head_dim, attention.embed_dim) == (2, 8, 16)
    assert pruned.hidden_dim == 16 and pruned.class_token.shape == (1, 1, 16)
    assembled, _ = LevelDatabase.build(model, space, x, never_prune=[]).assemble(levels)  # checked against materialize
    assert assembled.hidden_dim == 16 and assembled.encoder.layers[0].self_attention.num_heads == 2


@pytest.mark.parametrize("repeats", [[2, 1, 1], [1, 1, 2]])
def test_a_channel_shuffle_leaves_its_stream_whole_and_prunes_each_branch_consistently(repeats: list[int]) -> None:
    """The refusal names the groups that pass through a shuffle; with its line pasted, each
    unit's hidden width is pruned, exactly priced, and computes what the dense model does
    with the removed channels silenced."""
    torch.manual_seed(0)
    model = torchvision.models.ShuffleNetV2(repeats, [8, 16, 32, 64, 128], num_classes=CLASSES).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(UserError) as refused:
        build_search_space(model, x, grid=GRID, never_prune=[])
    message = str(refused.value)
    assert ("the group of layer 'stage2.0.branch1.2' (Conv2d): its channels pass through the channel shuffle in "
            "'stage2.0' (InvertedResidual), which permutes them; Torch-Pruning cannot prune them consistently"
            in message), message
    never_prune = yaml.safe_load(message.split("--space file: ")[1])["never_prune"]
    branches = [f"stage{s}.{u}.branch2.0" for s, n in zip((2, 3, 4), repeats) for u in range(n)]
    assert _exact(model, 32, never_prune=never_prune) == len(branches) + 2  # the stem, every branch, the last conv
    space = build_search_space(model, x, grid=GRID, never_prune=never_prune)
    assert space.group_names == ["conv1.0", *branches, "conv5.0"]
    levels = space.dense_candidate()
    for name in branches:
        levels[space.group_names.index(name)] = space.n_levels - 1
    pruned, kept = materialize(model, space, levels, x, never_prune=never_prune)
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        for name in branches:  # zero the removed channels after both norms of the branch
            unit = silenced.get_submodule(name.removesuffix(".branch2.0")).branch2
            removed = [i for i in range(unit[0].out_channels) if i not in kept[name]]
            for norm in (unit[1], unit[4]):
                norm.weight[removed] = 0
                norm.bias[removed] = 0
        batch = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(pruned.eval()(batch), silenced.eval()(batch))


def _swin(version: int) -> torch.nn.Module:
    """Two stages of two blocks; windows of 3 on maps of 8 and 4 tokens, so both are padded and shifted."""
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    torch.manual_seed(0)
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if version == 2 else {}
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[3, 3],
                           num_classes=CLASSES, **extra).eval()


@pytest.mark.parametrize("version", [1, 2])
def test_a_swin_transformer_loses_whole_heads_per_stage_and_is_priced_exactly(version: int) -> None:
    model = _swin(version)
    x = torch.randn(1, 3, 32, 32)
    assert _exact(model, 32) == 6  # one stream per stage (by heads) and every block's MLP, no never_prune needed
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    assert space.group_names == ["features.0.0", "features.1.0.mlp.0", "features.1.1.mlp.0", "features.2",
                                 "features.3.0.mlp.0", "features.3.1.mlp.0"]
    stream = space.groups[space.group_names.index("features.2")]
    assert (stream.size, stream.unit, stream.kept) == (32, 8, (32, 24, 16, 8))
    assert {"features.3.0.attn", "features.3.1.attn", "features.2"} <= set(stream.members)
    levels = space.dense_candidate()
    levels[space.group_names.index("features.2")] = 2
    pruned, _ = materialize(model, space, levels, x, never_prune=[])
    for block in pruned.features[3]:
        attention = block.attn
        assert (attention.num_heads, attention.qkv.weight.shape, attention.proj.weight.shape) == (2, (48, 16), (16, 16))
        per_head = attention.logit_scale.shape[0] if version == 2 else attention.relative_position_bias_table.shape[1]
        assert per_head == 2
    assert pruned.features[2].reduction.weight.shape == (16, 64) and pruned.head.in_features == 16
    assembled, _ = LevelDatabase.build(model, space, x, never_prune=[]).assemble(levels)  # checked against materialize
    assert assembled.features[3][0].attn.num_heads == 2


def _maxvit() -> torch.nn.Module:
    from torchvision.models.maxvit import MaxVit

    torch.manual_seed(0)
    return MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2, block_channels=[32, 64], block_layers=[1, 1],
                  head_dim=16, stochastic_depth_prob=0.2, num_classes=CLASSES).eval()


def test_a_maxvit_loses_whole_heads_per_block_and_is_priced_exactly() -> None:
    model = _maxvit()
    x = torch.randn(1, 3, 32, 32)
    assert _exact(model, 32) == 13  # stem, per block its stream (heads), MBConv, squeeze, two MLPs; the head
    space = build_search_space(model, x, grid=GRID, never_prune=[])
    stream = space.groups[space.group_names.index("blocks.1.layers.0.layers.MBconv.proj.1")]
    assert (stream.size, stream.unit, stream.kept) == (64, 16, (64, 48, 32, 16))
    levels = space.dense_candidate()
    levels[space.group_names.index("blocks.1.layers.0.layers.MBconv.proj.1")] = 3
    pruned, _ = materialize(model, space, levels, x, never_prune=[])
    attention = pruned.blocks[1].layers[0].layers.grid_attention.attn_layer[1]
    assert (attention.n_heads, attention.relative_position_bias_table.shape[1], attention.merge.weight.shape) == (
        1, 1, (16, 16))
    assembled, _ = LevelDatabase.build(model, space, x, never_prune=[]).assemble(levels)  # checked against materialize
    assert assembled.blocks[1].layers[0].layers.window_attention.attn_layer[1].n_heads == 1


@pytest.mark.parametrize("which", ["swin", "swin_v2", "maxvit"])
def test_windowed_attention_without_some_heads_computes_what_the_kept_heads_did(which: str) -> None:
    """The pruners cut the same heads from query, key, value, output and position bias: on an
    input whose removed channels are zero, with the output projection's columns of the removed
    heads zeroed, the dense layer's kept channels are the pruned layer's output."""
    from autoprune.space.layer_kinds import kind_of

    if which == "maxvit":  # 64 channels, 4 heads of 16, windows of 4 tokens, on [B, G, P, C]
        attention, proj, x = _maxvit().blocks[1].layers[0].layers.window_attention.attn_layer[1], "merge", (2, 4, 4)
        removed = list(range(16, 32)) + list(range(48, 64))
    else:  # 32 channels, 4 heads of 8, windows of 3, on [B, H, W, C]
        attention, proj, x = _swin(2 if which == "swin_v2" else 1).features[3][0].attn, "proj", (2, 4, 4)
        removed = list(range(8, 16)) + list(range(24, 32))
    width = getattr(attention, proj).in_features
    kept = [i for i in range(width) if i not in removed]
    silenced = copy.deepcopy(attention)
    with torch.no_grad():
        getattr(silenced, proj).weight[:, removed] = 0
        x = torch.randn(*x, width)
        x[..., removed] = 0
        expected = silenced(x)[..., kept]
        pruned = kind_of(attention).tp_pruner.prune_out_channels(copy.deepcopy(attention), removed)
        torch.testing.assert_close(pruned(x[..., kept]), expected)


def test_the_windowed_attention_pruner_refuses_part_of_a_head() -> None:
    from autoprune.space.layer_kinds.swin import WindowAttentionPruner

    with pytest.raises(ValueError, match="not whole heads of 8"):
        WindowAttentionPruner().prune_out_channels(_swin(1).features[3][0].attn, list(range(4)))


def test_analysis_past_its_index_budget_is_refused_in_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention written out with reshapes outside the known kinds (Swin's and MaxViT's, before
    they had kinds) made Torch-Pruning's index lists grow on every pass; past the budget the
    analysis ends in one sentence. The budget is lowered here so that a small ViT reaches it."""
    from autoprune.space import graph

    monkeypatch.setattr(graph, "GROUP_INDEX_BUDGET", 50)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=CLASSES).eval()
    with pytest.raises(UserError, match=r"^Torch-Pruning's channel analysis of this model grew past 50 "):
        build_search_space(model, torch.randn(1, 3, 32, 32), grid=GRID, never_prune=[])


@pytest.mark.slow
def test_googlenet_auxiliary_heads_are_pruned_so_training_mode_runs() -> None:
    torch.manual_seed(0)
    model = torchvision.models.googlenet(num_classes=CLASSES, init_weights=True).eval()
    assert _exact(model, 32, n_candidates=2) > 0


#: a model of each family by default; AUTOPRUNE_SURVEY=all for every classifier
FAMILY = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "inception_v3", "maxvit_t",
          "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "resnet18", "resnext50_32x4d",
          "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t", "vgg11", "vit_b_16", "wide_resnet50_2"]


def _survey_models() -> list[str]:
    if os.environ.get("AUTOPRUNE_SURVEY") == "all":
        return torchvision.models.list_models(module=torchvision.models)
    return FAMILY


@pytest.mark.slow
@pytest.mark.parametrize("name", _survey_models())
def test_every_classifier_is_built_exactly_or_refused_in_one_sentence(name: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    from torchvision_survey import run_isolated

    row = run_isolated(name, candidates=1, memory_gb=6.0, time_limit=600)
    assert row["outcome"] in ("built", "built with its refusal's line", "refused", "over the survey's memory cap"), row
    if row["outcome"].startswith("built"):
        assert row["exact"] is True and row["train_forward"] is True, row
    elif row["outcome"] == "refused":
        assert "\n" not in row["detail"] and row["detail"].endswith((".", "]")), row

