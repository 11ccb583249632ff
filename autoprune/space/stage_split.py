"""Where a network divides into stages, as a searcher sees it (no torch import).

A *stage* is a run of the network between two cuts: points whose output is all the rest
of the network reads (a tensor everything after depends on, and nothing else). The torch
side (:mod:`autoprune.space.stages`) finds them where the feature map's resolution or
width changes; searchers that divide the search (``emo-pms``) read this description, and
the evaluator measures how well a pruned stage reproduces the dense one's output at each
boundary.

- ``boundaries[s]``: the module whose output ends stage ``s``; the last stage ends at the
  model's output, named :data:`OUTPUT`.
- ``owner[g]``: the stage that owns group ``g`` of the space (in space order): the stage
  of the group's first layer in forward order. A group spanning several stages (a residual
  stream read by the next stage's first convolution and shortcut) belongs to the stage
  where it starts; pruning it narrows that stage's output, which the feature distortion
  at its boundary sees (the dropped channels count as zeros).
- ``carried[s]``: the group whose channels the tensor at ``boundaries[s]`` carries (None:
  channels no group prunes, such as the logits). It is owned by stage ``s`` or an earlier
  one, so with every group outside stage ``s`` dense, stage ``s`` reads exactly the dense
  model's features: the input the EMO-PMS sub-problems prescribe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: the boundary name of the last stage: the model's own output
OUTPUT = "output"


@dataclass(frozen=True)
class StageSplit:
    """Stages in forward order, the groups each owns and the group each boundary carries."""

    boundaries: tuple[str, ...]
    owner: tuple[int, ...]
    carried: tuple[int | None, ...]

    def __post_init__(self) -> None:
        n = len(self.boundaries)
        if n < 1:
            raise ValueError("a stage split needs at least one stage")
        if len(set(self.boundaries)) != n:
            raise ValueError(f"stage boundaries must differ, got {list(self.boundaries)}")
        if self.boundaries[-1] != OUTPUT:
            raise ValueError(f"the last stage must end at the model's output ({OUTPUT!r}), got {self.boundaries[-1]!r}")
        if len(self.carried) != n:
            raise ValueError(f"carried must name one group (or None) per boundary, got {len(self.carried)} for {n}")
        if any(not 0 <= s < n for s in self.owner):
            raise ValueError(f"every group's owner must be a stage in [0, {n - 1}], got {list(self.owner)}")
        empty = [s for s in range(n) if s not in self.owner]
        if empty:
            raise ValueError(f"stages {empty} own no group")
        for s, g in enumerate(self.carried):
            if g is not None and not (0 <= g < len(self.owner) and self.owner[g] <= s):
                raise ValueError(f"boundary {s} carries group {g}, which no stage up to {s} owns")

    @property
    def n_stages(self) -> int:
        return len(self.boundaries)

    def groups_of(self, stage: int) -> tuple[int, ...]:
        """The groups stage ``stage`` owns, in space order."""
        return tuple(g for g, s in enumerate(self.owner) if s == stage)

    def merged(self, k: int) -> "StageSplit":
        """``k`` sub-networks of consecutive stages, their group counts as even as the stages
        allow (the largest as small as possible; ties: cut as early as possible)."""
        n = self.n_stages
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ValueError(f"the network has {n} stages; sub-networks must be a whole number in [1, {n}], got {k!r}")
        sizes = [len(self.groups_of(s)) for s in range(n)]
        ends = _balanced_cuts(sizes, k)
        new_stage = [next(i for i, end in enumerate(ends) if s <= end) for s in range(n)]
        return StageSplit(boundaries=tuple(self.boundaries[e] for e in ends),
                          owner=tuple(new_stage[s] for s in self.owner),
                          carried=tuple(self.carried[e] for e in ends))

    def to_dict(self) -> dict[str, Any]:
        return {"boundaries": list(self.boundaries), "owner": list(self.owner), "carried": list(self.carried)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageSplit":
        return cls(boundaries=tuple(data["boundaries"]), owner=tuple(int(s) for s in data["owner"]),
                   carried=tuple(None if g is None else int(g) for g in data["carried"]))


def _balanced_cuts(sizes: list[int], k: int) -> list[int]:
    """Last stage index of each of ``k`` contiguous parts minimising the largest part's sum."""
    n = len(sizes)
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    inf = float("inf")
    # best[j][i]: the least largest part splitting the first i stages into j parts
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for m in range(j - 1, i):
                value = max(best[j - 1][m], prefix[i] - prefix[m])
                if value < best[j][i]:
                    best[j][i], cut[j][i] = value, m
    ends, i = [], n
    for j in range(k, 0, -1):
        ends.append(i - 1)
        i = cut[j][i]
    return ends[::-1]
