"""torchvision models as a user's ``--model`` factory through the CLI: search, export, load in a
fresh process. A ResNeXt (grouped convolutions), a ViT (attention heads) and a GoogLeNet
(auxiliary logits in training mode, retrained and distilled) are searched as they are, on the
digits task at 8x8, so it takes seconds; a Swin Transformer (windowed attention, heads per
stage) on Fashion-MNIST-shaped data (28x28, one channel: IDX files written here, not the real
ones)."""

from __future__ import annotations

import json
import struct
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autoprune.torchvision_compat import make_torchvision_importable

make_torchvision_importable()
pytest.importorskip("torchvision")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from helpers import cli, python  # noqa: E402

SOURCE = '''
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.googlenet import BasicConv2d, GoogLeNet
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer


def resnext(in_channels, num_classes):
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=num_classes, groups=4, width_per_group=4)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
    return model


def googlenet(in_channels, num_classes):
    model = GoogLeNet(num_classes=num_classes, aux_logits=True, init_weights=True)
    model.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, padding=1)
    return model


def vit(in_channels, image_size, num_classes):
    model = VisionTransformer(image_size=image_size, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=num_classes)
    model.conv_proj = nn.Conv2d(in_channels, 16, 4, stride=4)
    return model


def swin_v2(in_channels, num_classes):
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=[4, 4],
                            num_classes=num_classes, block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    model.features[0][0] = nn.Conv2d(in_channels, 16, 4, stride=4)
    return model
'''

SEARCH = ["search", "--trials", "2", "--fidelity", "2", "--bn-batches", "1", "--budget",
          "flops=0.7"]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    (tmp_path / "vision_nets.py").write_text(textwrap.dedent(SOURCE))
    return tmp_path


def _search_export_load(folder: Path, factory: str, *extra: str, export_steps: int = 0,
                        data: tuple[str, ...] = ("--data", "digits"), side: int = 8) -> dict:
    run_dir, out = folder / "run", folder / "exported"
    done = cli(*SEARCH, *data, "--model", f"vision_nets:{factory}", "--run-dir", str(run_dir), *extra, cwd=folder)
    assert done.returncode == 0, done.stderr
    done = cli("export", str(run_dir), "--out", str(out), "--steps", str(export_steps), "--trust-factory",
               cwd=folder)
    assert done.returncode == 0, done.stderr
    recipe = json.loads((out / "recipe.json").read_text())
    done = python("import json, sys, torch, autoprune\n"
                  "sys.path.append('.')\n"
                  f"m = autoprune.load('exported', factory='vision_nets:{factory}')\n"
                  "from autoprune.space.counting import independent_count\n"
                  f"c = independent_count(m, torch.zeros(1, 1, {side}, {side}))\n"
                  f"print(json.dumps({{'shape': list(m(torch.zeros(2, 1, {side}, {side})).shape), 'flops': c.flops,"
                  " 'params': c.params}))", cwd=folder)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["shape"] == [2, 10]
    assert (loaded["flops"], loaded["params"]) == (recipe["metrics"]["flops"], recipe["metrics"]["params"])
    return recipe


def test_a_resnext_is_searched_exported_and_loaded(user_folder: Path) -> None:
    recipe = _search_export_load(user_folder, "resnext")
    assert recipe["metrics"]["flops"] <= 0.7 * recipe["dense"]["flops"]


@pytest.mark.slow
def test_a_vit_is_searched_with_its_heads_exported_and_loaded(user_folder: Path) -> None:
    recipe = _search_export_load(user_folder, "vit")
    assert recipe["metrics"]["flops"] < recipe["dense"]["flops"]


@pytest.mark.slow
def test_a_googlenet_with_auxiliary_heads_is_retrained_distilled_exported_and_loaded(user_folder: Path) -> None:
    recipe = _search_export_load(user_folder, "googlenet", "--distill-weight", "0.5", export_steps=2)
    assert recipe["metrics"]["flops"] <= 0.7 * recipe["dense"]["flops"]
    trials = [json.loads(line) for line in (user_folder / "run" / "trials.jsonl").read_text().splitlines()]
    assert trials and all(t["status"] == "ok" and t["metrics"]["steps"] == 2 for t in trials), trials


def _fake_fashion_mnist(folder: Path, *, train: int, test: int) -> Path:
    """The four IDX files of Fashion-MNIST (uncompressed), with random 28x28 images whose mean
    brightness follows the label, so a little training can tell classes apart."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, n in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(rng.normal(20 * labels[:, None, None], 30, (n, 28, 28)), 0, 255).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", n, 28, 28)
                                                              + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", n)
                                                              + labels.tobytes())
    return folder


@pytest.mark.slow
def test_a_swin_transformer_is_searched_by_heads_on_fashion_mnist_exported_and_loaded(user_folder: Path) -> None:
    data = _fake_fashion_mnist(user_folder / "fashion", train=240, test=60)
    recipe = _search_export_load(user_folder, "swin_v2", data=("--data", "fashion-mnist", "--data-root", str(data)),
                                 side=28)
    assert recipe["metrics"]["flops"] <= 0.7 * recipe["dense"]["flops"]
    assert recipe["metrics"]["params"] < recipe["dense"]["params"] and 0.0 <= recipe["metrics"]["test_accuracy"] <= 1.0
