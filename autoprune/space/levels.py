"""Keep levels: the discrete grid of kept channel counts a group may take.

Level 0 keeps everything; level ``i`` keeps about ``keep_ratios[i]`` of the group's
channels, rounded to a multiple of ``round_to`` (hardware likes multiples of 8 on GPUs)
and never fewer than ``min_channels``. All groups share one ratio grid, so "level i
everywhere" is uniform pruning, the baseline every paper compares against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autoprune.errors import UserError


@dataclass(frozen=True)
class LevelGrid:
    """How many channels each level keeps. Validated on construction."""

    keep_ratios: tuple[float, ...]
    min_channels: int = 1
    round_to: int = 1

    def __post_init__(self) -> None:
        ratios = self.keep_ratios
        if len(ratios) < 2:
            raise UserError(f"keep_ratios needs at least two levels, got {list(ratios)}.")
        if ratios[0] != 1.0:
            raise UserError(f"keep_ratios must start with 1.0 (level 0 is dense), got {ratios[0]}.")
        if any(not 0.0 < r <= 1.0 for r in ratios) or any(b >= a for a, b in zip(ratios, ratios[1:])):
            raise UserError(f"keep_ratios must be strictly decreasing values in (0, 1], got {list(ratios)}.")
        if self.min_channels < 1:
            raise UserError(f"min_channels must be at least 1, got {self.min_channels}.")
        if self.round_to < 1:
            raise UserError(f"round_to must be at least 1, got {self.round_to}.")

    @classmethod
    def from_step(cls, *, step: float, min_ratio: float, min_channels: int = 1, round_to: int = 1) -> "LevelGrid":
        """Ratios 1, 1-step, 1-2*step, ... down to ``min_ratio`` (inclusive, within rounding)."""
        if not 0.0 < step < 1.0:
            raise UserError(f"level step must be in (0, 1), got {step}.")
        if not 0.0 < min_ratio <= 1.0:
            raise UserError(f"min_keep_ratio must be in (0, 1], got {min_ratio}.")
        n = int(math.floor((1.0 - min_ratio) / step + 1e-9))
        ratios = tuple(round(1.0 - i * step, 10) for i in range(n + 1))
        return cls(keep_ratios=ratios, min_channels=min_channels, round_to=round_to)

    def kept(self, size: int) -> tuple[int, ...]:
        """Kept channel count at every level for a group of ``size`` channels (non-increasing)."""
        floor = min(size, self.min_channels)
        counts = []
        for ratio in self.keep_ratios:
            if ratio == 1.0:
                counts.append(size)
                continue
            rounded = int(round(ratio * size / self.round_to)) * self.round_to
            counts.append(max(floor, min(size, rounded)))
        return tuple(counts)

    def to_dict(self) -> dict[str, Any]:
        return {"keep_ratios": list(self.keep_ratios), "min_channels": self.min_channels, "round_to": self.round_to}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LevelGrid":
        return cls(
            keep_ratios=tuple(float(r) for r in data["keep_ratios"]),
            min_channels=int(data["min_channels"]),
            round_to=int(data["round_to"]),
        )
