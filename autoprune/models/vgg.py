"""VGG-16 with BatchNorm in its CIFAR form (13 conv layers, one linear classifier).

The CIFAR variant (as used throughout the pruning literature, e.g. Li et al. 2017,
"Pruning Filters for Efficient ConvNets") drops ImageNet VGG's three large fully
connected layers: after the five pooling stages a 32x32 input is 1x1x512, and a single
linear layer classifies it. To serve smaller images (28x28 Fashion-MNIST, 8x8 digits)
a max-pool is left out once the feature map is already 1x1, and a global average pool
before the classifier absorbs whatever resolution is left. Which pools are kept is
decided from ``image_size`` at construction, so the built model is fixed and traceable.
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models.common import init_weights, require_positive_int

POOL = "M"
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, POOL,
    128, 128, POOL,
    256, 256, 256, POOL,
    512, 512, 512, POOL,
    512, 512, 512, POOL,
)  # fmt: skip


def vgg_features(config: tuple[int | str, ...], *, in_channels: int, image_size: int) -> tuple[nn.Sequential, int]:
    """The conv/BN/ReLU/max-pool stack for ``config`` and its number of output channels.

    A pool (2x2, stride 2, rounding down) is kept only while the feature map is at least
    2 pixels wide, so the resolution never drops below 1x1.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    size = image_size
    for entry in config:
        if entry == POOL:
            if size >= 2:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            continue
        if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1:
            raise ValueError(f"config entries must be positive conv widths or {POOL!r}, got {entry!r}")
        layers += [
            nn.Conv2d(channels, entry, 3, padding=1, bias=False),
            nn.BatchNorm2d(entry),
            nn.ReLU(inplace=True),
        ]
        channels = entry
    return nn.Sequential(*layers), channels


class CifarVGG(nn.Module):
    """VGG feature stack, global average pool, one linear classifier."""

    def __init__(
        self,
        *,
        config: tuple[int | str, ...] = VGG16_CONFIG,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        require_positive_int("in_channels", in_channels)
        require_positive_int("image_size", image_size)
        require_positive_int("num_classes", num_classes)
        if not any(isinstance(entry, int) for entry in config):
            raise ValueError(f"config must contain at least one conv width, got {config!r}")
        self.features, channels = vgg_features(config, in_channels=in_channels, image_size=image_size)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images (N, in_channels, H, W)."""
        return self.classifier(self.flatten(self.pool(self.features(x))))


def vgg16_bn(*, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-16 with BatchNorm (about 14.7 M parameters at 10 classes)."""
    return CifarVGG(config=VGG16_CONFIG, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
