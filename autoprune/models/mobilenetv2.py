"""MobileNetV2 (Sandler et al. 2018) in its CIFAR form, width multiplier 1.0.

The CIFAR variant keeps the paper's stages of inverted residual blocks but lets the stem
and the second stage run at stride 1 instead of 2, so a 32x32 input ends at 4x4 rather
than 1x1. For smaller images the remaining stride-2 stages fall back to stride 1 once the
feature map is 1 pixel wide; this is decided from ``image_size`` at construction, so the
built model is fixed and traceable.

Depthwise convolutions tie each hidden channel to itself, and Torch-Pruning couples
them with the expansion layer feeding them: pruning a block's hidden width removes the
matching expansion filter, depthwise filter and projection input together.
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models.common import conv_output_size, init_weights, require_positive_int

# (expansion t, output channels c, blocks n, stride s) per stage, as in the paper's
# table 2 except for the second stage's stride (1 on CIFAR, 2 on ImageNet).
CIFAR_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def conv_bn_relu6(
    in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Convolution (no bias, BatchNorm follows), BatchNorm, ReLU6."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), filter (depthwise 3x3), project (1x1, linear), plus identity shortcut.

    The shortcut exists only when the block keeps the shape (stride 1, same width), as in
    the paper; the projection has no activation because ReLU would destroy information
    in the narrow bottleneck.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [
            conv_bn_relu6(hidden, hidden, kernel_size=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.body = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output, with the input added back when the shape allows."""
        out = self.body(x)
        return out + x if self.use_shortcut else out


class CifarMobileNetV2(nn.Module):
    """Stem, inverted residual stages, 1x1 head conv, global pool, linear classifier."""

    def __init__(self, *, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        require_positive_int("in_channels", in_channels)
        require_positive_int("image_size", image_size)
        require_positive_int("num_classes", num_classes)
        self.stem = conv_bn_relu6(in_channels, STEM_CHANNELS, kernel_size=3)
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        size = image_size
        for expansion, width, num_blocks, stage_stride in CIFAR_STAGES:
            for index in range(num_blocks):
                # Downsample only in a stage's first block, and only while there is room.
                stride = stage_stride if index == 0 and size >= 2 else 1
                blocks.append(InvertedResidual(channels, width, stride=stride, expansion=expansion))
                size = conv_output_size(size, stride=stride)
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn_relu6(channels, HEAD_CHANNELS, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images (N, in_channels, H, W)."""
        return self.classifier(self.flatten(self.pool(self.head(self.blocks(self.stem(x))))))


def mobilenetv2(*, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> CifarMobileNetV2:
    """CIFAR MobileNetV2, width 1.0 (about 2.2 M parameters at 10 classes)."""
    return CifarMobileNetV2(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
