"""The residual basic block shared by :mod:`.digitnet` and the CIFAR ResNets."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a residual connection (He et al. 2016).

    When the block changes the shape (``stride`` > 1 or a new channel count) the shortcut
    is a 1x1 convolution with BatchNorm ("option B") rather than zero padding ("option
    A"): the projection is an ordinary layer, so Torch-Pruning couples the block's output
    channels with the shortcut's and prunes both together without special cases.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch plus shortcut, then ReLU."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def residual_stage(in_channels: int, out_channels: int, *, num_blocks: int, stride: int) -> nn.Sequential:
    """``num_blocks`` basic blocks; only the first one changes shape (stride, channels)."""
    blocks = [BasicBlock(in_channels, out_channels, stride=stride)]
    blocks += [BasicBlock(out_channels, out_channels, stride=1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)
