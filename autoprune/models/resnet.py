"""CIFAR ResNets (He et al. 2016, section 4.2): ResNet-20 and ResNet-56.

Three stages of 16, 32 and 64 channels with ``n`` basic blocks each (6n + 2 layers),
the second and third stage halving the resolution. Unlike the paper's CIFAR runs, the
shortcut that changes shape is a 1x1 conv + BatchNorm projection (option B, see
:class:`~autoprune.models.blocks.BasicBlock`), which Torch-Pruning handles as ordinary
coupled layers. Global average pooling makes the nets work at any image size.
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models.blocks import residual_stage
from autoprune.models.common import init_weights, require_positive_int

STAGE_WIDTHS: tuple[int, int, int] = (16, 32, 64)


class CifarResNet(nn.Module):
    """A CIFAR-style ResNet with ``blocks_per_stage`` basic blocks in each of three stages."""

    def __init__(
        self,
        *,
        blocks_per_stage: int,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        require_positive_int("blocks_per_stage", blocks_per_stage)
        require_positive_int("in_channels", in_channels)
        # Only checked: global pooling makes the layers the same at every image size.
        require_positive_int("image_size", image_size)
        require_positive_int("num_classes", num_classes)
        first = STAGE_WIDTHS[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(inplace=True),
        )
        stages = []
        previous = first
        for index, width in enumerate(STAGE_WIDTHS):
            stride = 1 if index == 0 else 2
            stages.append(residual_stage(previous, width, num_blocks=blocks_per_stage, stride=stride))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images (N, in_channels, H, W)."""
        return self.classifier(self.flatten(self.pool(self.stages(self.stem(x)))))


def resnet20(*, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> CifarResNet:
    """ResNet-20: three basic blocks per stage (about 0.27 M parameters at 10 classes)."""
    return CifarResNet(blocks_per_stage=3, in_channels=in_channels, image_size=image_size, num_classes=num_classes)


def resnet56(*, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> CifarResNet:
    """ResNet-56: nine basic blocks per stage (about 0.86 M parameters at 10 classes)."""
    return CifarResNet(blocks_per_stage=9, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
