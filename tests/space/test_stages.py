"""Stage boundaries found from a forward pass: the CIFAR ResNet's three stages, residual
streams owned where they start, cuts verified rather than assumed."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models import build_model
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.stage_split import OUTPUT
from autoprune.space.stages import find_stages


def _space(model: nn.Module, example: torch.Tensor, family: str):
    return build_search_space(model, example, grid=load_space_config(family).grid, never_prune=[])


def test_resnet20_divides_into_its_three_stages_with_streams_where_they_start() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10).eval()
    example = torch.zeros(1, 3, 32, 32)
    space = _space(model, example, "resnet20")
    split = find_stages(model, example, space)
    assert split is not None and split.boundaries == ("stages.0", "stages.1", OUTPUT)
    names = space.group_names
    for g, name in enumerate(names):
        expected = 0 if name == "stem.0" or name.startswith("stages.0.") else int(name.split(".")[1])
        assert split.owner[g] == expected, name
    # the stream of stage 0 (written by the stem, read by stage 1's first block and shortcut)
    # and stage 1's stream are what the boundaries carry
    assert [names[g] for g in split.carried[:2]] == ["stem.0", "stages.1.0.conv2"] and split.carried[2] is None
    stream = space.groups[names.index("stem.0")]
    assert "stages.1.0.conv1" in stream.members, "the stream spans into stage 1"


class _Skip(nn.Module):
    """The head reads the stem's output again, past the second stage: the second stage's
    end is no cut (what follows it reads more than its output)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16 + 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        c = self.c(self.b(a))
        return self.head(torch.cat([c.mean(dim=(2, 3)), a.mean(dim=(2, 3))], dim=1))


def test_a_module_whose_input_is_read_again_later_is_not_a_cut() -> None:
    torch.manual_seed(0)
    model = _Skip().eval()
    example = torch.zeros(1, 3, 8, 8)
    space = _space(model, example, "default")
    split = find_stages(model, example, space)
    # `a` is a cut (everything after reads only its output, the head too); `c`, where the
    # second run of shapes ends, is not: the head also reads `a`
    assert split is not None and split.boundaries == ("a", OUTPUT)
    assert space.group_names[split.carried[0]] == "a.0"
