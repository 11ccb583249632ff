"""The same model always gives the same groups: nothing in the analysis may depend on where
Python happens to put an object (``id`` reuse, set order), or a space and a later analysis
of its model disagree and the evaluator refuses the candidate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autoprune.space.analysis import build_search_space
from autoprune.space.graph import group_members, output_layer_names, trace_groups
from autoprune.space.levels import LevelGrid
from autoprune.torchvision_compat import make_torchvision_importable

GRID = LevelGrid.from_step(step=0.25, min_ratio=0.25)


class FreedOutput(nn.Module):
    """The convolution's output is freed before the model's output is made, which CPython then
    usually allocates at the same address."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).relu()
        return self.fc(h.mean((2, 3))).softmax(1)


def test_a_freed_layer_output_at_the_outputs_address_is_not_taken_for_a_classifier() -> None:
    model, x = FreedOutput().eval(), torch.randn(1, 3, 6, 6)
    assert {tuple(output_layer_names(model, x)) for _ in range(50)} == {("fc",)}
    assert build_search_space(model, x, grid=GRID, never_prune=[]).group_names == ["conv"]


def _groups(model: nn.Module, x: torch.Tensor) -> list[tuple[str, list[tuple[str, bool, int]]]]:
    traced = trace_groups(model, x, never_prune=[])
    return [(name, [(traced.module_names[m], out, n) for m, out, n in group_members(traced, name)])
            for name in traced.groups]


def test_squeezenet_gives_the_same_groups_on_every_analysis_in_one_process() -> None:
    make_torchvision_importable()
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model, x = torchvision.models.squeezenet1_1(num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    assert {tuple(output_layer_names(model, x)) for _ in range(150)} == {("classifier.1",)}
    first = _groups(model, x)
    assert len(first) == 25
    for _ in range(4):
        assert _groups(copy.deepcopy(model), x) == first
