"""A model the analysis cannot handle gets one sentence naming the layer, never a traceback.

The models are real architectures Torch-Pruning fails on, written the way users write
them (a ShuffleNetV2 channel shuffle, a GRU over convolution features), run through the
CLI as ``--model module:factory`` from the user's folder; the line a refusal gives, pasted,
gets past it."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import cli  # noqa: E402

SOURCE = '''
import torch
from torch import nn


def channel_shuffle(x, groups):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class Unit(nn.Module):
    """ShuffleNetV2's unit: split the channels, transform one half, concatenate, shuffle."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        half = oup // 2
        self.branch1 = nn.Sequential()
        if stride > 1:
            self.branch1 = nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                                         nn.BatchNorm2d(inp), nn.Conv2d(inp, half, 1, bias=False),
                                         nn.BatchNorm2d(half), nn.ReLU())
        self.branch2 = nn.Sequential(nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
                                     nn.BatchNorm2d(half), nn.ReLU(),
                                     nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
                                     nn.BatchNorm2d(half), nn.Conv2d(half, half, 1, bias=False),
                                     nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def shufflenet(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                         Unit(24, 48, 2), Unit(48, 48, 1), Unit(48, 48, 1),
                         Unit(48, 96, 2), Unit(96, 96, 1), Unit(96, 96, 1),
                         nn.Conv2d(96, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


class ConvGRU(nn.Module):
    """Convolution features read row by row by a GRU."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.gru = nn.GRU(16 * 8, 32, batch_first=True)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        f = self.features(x)
        rows = f.permute(0, 2, 1, 3).flatten(2)
        return self.head(self.gru(rows)[0][:, -1])


def convgru(in_channels, num_classes):
    return ConvGRU(in_channels, num_classes)
'''

SEARCH = ["search", "--data", "digits", "--trials", "1", "--fidelity", "1", "--bn-batches", "1",
          "--budget", "flops=0.9"]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    (tmp_path / "user_nets.py").write_text(textwrap.dedent(SOURCE))
    return tmp_path


def _refused(done, *, naming: str) -> str:
    """The one error line (a busy machine may add a warning about threads before it)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("autoprune: error:")]
    assert len(errors) == 1 and errors[0] == done.stderr.strip().splitlines()[-1], done.stderr
    assert naming in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow  # two CLI runs; tests/space/test_torchvision_models.py covers it in the default run
def test_a_channel_shuffle_is_refused_naming_the_unit_and_its_line_lets_the_branches_be_searched(
        user_folder: Path) -> None:
    run_dir = user_folder / "run"
    done = cli(*SEARCH, "--model", "user_nets:shufflenet", "--run-dir", str(run_dir), cwd=user_folder)
    message = _refused(done, naming="the group of layer '3.branch1.2' (Conv2d): its channels pass through the "
                                    "channel shuffle in '3' (Unit), which permutes them")
    assert "--space file: never_prune: [" in message, message
    assert not run_dir.exists()
    space = user_folder / "space.yaml"
    space.write_text(message.split("--space file: ")[1] + "\n")  # pasted as it is
    done = cli(*SEARCH, "--model", "user_nets:shufflenet", "--space", str(space), "--run-dir", str(run_dir),
               cwd=user_folder)
    assert done.returncode == 0, done.stderr
    groups = [g["name"] for g in json.loads((run_dir / "run.json").read_text())["space"]["groups"]]
    assert [g for g in groups if "branch2" in g] == [f"{u}.branch2.0" for u in range(3, 9)], groups


def test_a_layer_whose_group_cannot_be_built_is_named_and_never_prune_gets_past_it(user_folder: Path) -> None:
    run_dir = user_folder / "run"
    done = cli(*SEARCH, "--model", "user_nets:convgru", "--run-dir", str(run_dir), cwd=user_folder)
    message = _refused(done, naming="the group of layer 'features.2' (Conv2d)")
    assert message.endswith("put this line in a --space file: never_prune: [features.2]"), message
    assert not run_dir.exists()
    space = user_folder / "space.yaml"
    space.write_text(message.split("--space file: ")[1] + "\n")  # pasted as it is
    done = cli(*SEARCH, "--model", "user_nets:convgru", "--space", str(space), "--run-dir", str(run_dir),
               cwd=user_folder)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "trials.jsonl").read_text().count("\n") == 1
