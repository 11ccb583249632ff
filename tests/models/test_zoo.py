"""The model zoo: every model builds at every task shape and survives Torch-Pruning."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import UserError
from autoprune.models import MODEL_NAMES, DigitNet, build_model, model_family

# (in_channels, image_size, num_classes): digits, Fashion-MNIST, CIFAR-100.
SHAPES = [(1, 8, 10), (1, 28, 10), (3, 32, 100)]


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_model_names_are_the_documented_ones() -> None:
    assert MODEL_NAMES == ("digitnet", "resnet20", "resnet56", "vgg16_bn", "mobilenetv2")


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("in_channels", "image_size", "num_classes"), SHAPES)
def test_builds_and_outputs_logits(name: str, in_channels: int, image_size: int, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, image_size, image_size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.out_features == num_classes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_construction_is_deterministic_under_a_seed(name: str) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(build_model(name, in_channels=1, image_size=8, num_classes=10).state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_init_is_kaiming_for_convs_and_identity_for_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    conv = model.stages[2][1].conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)


def test_unknown_name_raises_user_error_listing_the_names() -> None:
    with pytest.raises(UserError) as info:
        build_model("resnet18", in_channels=3, image_size=32, num_classes=10)
    for name in MODEL_NAMES:
        assert name in str(info.value)
    with pytest.raises(UserError, match="resnet18"):
        model_family("resnet18")


@pytest.mark.parametrize("argument", ["in_channels", "image_size", "num_classes"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_shape_argument_raises_value_error_naming_it(argument: str, bad: object) -> None:
    kwargs: dict[str, object] = {"in_channels": 3, "image_size": 32, "num_classes": 10, argument: bad}
    with pytest.raises(ValueError, match=argument):
        build_model("digitnet", **kwargs)  # type: ignore[arg-type]


def test_families() -> None:
    assert [model_family(n) for n in MODEL_NAMES] == ["digitnet", "resnet", "resnet", "vgg", "mobilenetv2"]


def test_digitnet_is_small() -> None:
    params = _count_params(DigitNet(in_channels=1, num_classes=10))
    assert 50_000 <= params <= 150_000


def test_vgg_skips_pools_that_would_go_below_one_pixel() -> None:
    pools = {
        size: sum(isinstance(m, nn.MaxPool2d) for m in build_model(
            "vgg16_bn", in_channels=1, image_size=size, num_classes=10).modules())
        for size in (8, 28, 32)
    }
    assert pools == {8: 3, 28: 4, 32: 5}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_half_of_every_group_can_be_pruned(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, image_size=8, num_classes=10).eval()
    x = torch.randn(2, 3, 8, 8)
    dense_params = _count_params(model)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    pruned_groups = 0
    for group in graph.get_all_groups(ignored_layers=[model.classifier], root_module_types=[nn.Conv2d, nn.Linear]):
        width = len(group[0].idxs)
        if width < 2:
            continue
        group.prune(list(range(width // 2)))
        pruned_groups += 1
    assert pruned_groups > 0
    assert _count_params(model) < 0.5 * dense_params
    assert model.classifier.out_features == 10
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
