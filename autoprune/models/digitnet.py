"""DigitNet: a small residual CNN for scikit-learn's 8x8 digits, the embedded default task.

It is sized (about 77k parameters, about 2 M multiply-accumulates per 8x8 image) to
train to >= 97% test accuracy on the 1437 training digits in seconds on a laptop CPU,
while still having what makes pruning interesting: BatchNorm, a residual connection
that couples channels across layers, and a projection shortcut at the downsampling.
Global average pooling makes it work at any image size, so the same net serves 28x28
inputs too.
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models.blocks import residual_stage
from autoprune.models.common import init_weights, require_positive_int


class DigitNet(nn.Module):
    """Stem conv, one residual stage per entry of ``widths``, global pool, linear classifier.

    The first stage keeps the resolution; each later stage halves it with a stride-2
    block whose shortcut is a 1x1 conv + BatchNorm projection.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64),
    ) -> None:
        super().__init__()
        require_positive_int("in_channels", in_channels)
        require_positive_int("num_classes", num_classes)
        if not widths:
            raise ValueError(f"widths must name at least one stage width, got {widths!r}")
        for width in widths:
            require_positive_int("widths entry", width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        previous = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(residual_stage(previous, width, num_blocks=1, stride=stride))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images (N, in_channels, H, W)."""
        return self.classifier(self.flatten(self.pool(self.stages(self.stem(x)))))
