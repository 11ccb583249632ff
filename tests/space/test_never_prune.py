"""``never_prune`` patterns: globs over layer names, a container covering the layers in it."""

from __future__ import annotations

import torch

from autoprune.models import build_model
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.graph import unmatched_patterns


def _groups(never_prune: list[str]) -> list[str]:
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    grid = load_space_config("digitnet").grid
    return build_search_space(model, torch.randn(1, 1, 8, 8), grid=grid, never_prune=never_prune).group_names


def test_naming_a_container_protects_the_layers_inside_it() -> None:
    everything = _groups([])
    stem = [name for name in everything if name.startswith("stem.")]
    assert stem, everything
    assert _groups(["stem"]) == [name for name in everything if name not in stem]
    assert _groups(["stem.*"]) == _groups(["stem"])


def test_patterns_that_name_no_layer_are_reported() -> None:
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10)
    assert unmatched_patterns(model, ["stem", "stem.0", "st*", "stem.conv", "head?"]) == ["stem.conv", "head?"]
