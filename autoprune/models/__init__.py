"""The model zoo: built-in networks by name, and the search-space family each belongs to.

Every model takes the task's input shape and class count, so one name serves the 8x8
digits, 28x28 Fashion-MNIST and 32x32 CIFAR alike. All are plain convolutional nets
with BatchNorm that Torch-Pruning can prune physically; each keeps its final linear
layer as the attribute ``classifier`` (never pruned: its outputs are the classes).
Construction draws only from torch's global generator, so ``torch.manual_seed`` makes it
reproducible.

The family names the YAML defaults in ``search_spaces/`` (level grids, minimum keep,
layers never pruned) shared by the models of one architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from autoprune.errors import UserError
from autoprune.models.common import require_positive_int
from autoprune.models.digitnet import DigitNet
from autoprune.models.mobilenetv2 import mobilenetv2
from autoprune.models.resnet import resnet20, resnet56
from autoprune.models.vgg import vgg16_bn

__all__ = ["MODEL_NAMES", "DigitNet", "build_model", "model_family"]


@dataclass(frozen=True)
class _Entry:
    """How to build one named model, and which search-space family it uses."""

    factory: Callable[..., nn.Module]
    family: str


def _digitnet(*, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """DigitNet under the zoo's common signature (global pooling: any image size)."""
    del image_size  # the layers do not depend on it; checked by build_model
    return DigitNet(in_channels=in_channels, num_classes=num_classes)


_REGISTRY: dict[str, _Entry] = {
    "digitnet": _Entry(_digitnet, "digitnet"),
    "resnet20": _Entry(resnet20, "resnet"),
    "resnet56": _Entry(resnet56, "resnet"),
    "vgg16_bn": _Entry(vgg16_bn, "vgg"),
    "mobilenetv2": _Entry(mobilenetv2, "mobilenetv2"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _entry(name: str) -> _Entry:
    """The registry entry for ``name``, or a :class:`UserError` listing the known names."""
    if name not in _REGISTRY:
        raise UserError(
            f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)} "
            "or give your own factory as package.module:function."
        )
    return _REGISTRY[name]


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """A freshly initialised zoo model for images (in_channels, image_size, image_size).

    Raises :class:`UserError` for an unknown name and ``ValueError`` naming the argument
    for a shape that is not a positive integer.
    """
    entry = _entry(name)
    require_positive_int("in_channels", in_channels)
    require_positive_int("image_size", image_size)
    require_positive_int("num_classes", num_classes)
    return entry.factory(in_channels=in_channels, image_size=image_size, num_classes=num_classes)


def model_family(name: str) -> str:
    """The search-space family of a zoo model: "digitnet", "resnet", "vgg" or "mobilenetv2"."""
    return _entry(name).family
