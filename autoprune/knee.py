"""The knee of a front: the member where the trade-off between quality and FLOPs bends.

The rule (``--pick knee``), in quality against FLOPs only:

1. keep the front members no other member beats in both quality and FLOPs (the
   staircase a front plot draws);
2. scale both axes to [0, 1] over that staircase: FLOPs by their range, quality by its
   range with the better end at 0 (accuracy flipped; perplexity as is);
3. draw the chord from the cheapest member to the best one; the knee is the member
   farthest below it, towards the ideal corner (cheap and good). This is the
   "maximum distance to the chord" rule of Kneedle (Satopaa et al., 2011) on a
   discrete front.

With fewer than three members there is no bend to find and the best quality is the knee;
so it is when no member lies below the chord (a straight or concave staircase).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autoprune.store.quality import Quality


def staircase(front: pd.DataFrame, quality: Quality) -> pd.DataFrame:
    """The members of ``front`` that no other member beats in both quality and FLOPs, cheapest first."""
    if front.empty:
        return front
    usable = front.dropna(subset=[quality.metric, "flops"])
    ordered = usable.sort_values(["flops", quality.metric], ascending=[True, not quality.higher_is_better])
    keep, best = [], None
    for index, value in ordered[quality.metric].items():
        if best is None or (value > best if quality.higher_is_better else value < best):
            keep.append(index)
            best = value
    return ordered.loc[keep]


def knee_row(front: pd.DataFrame, quality: Quality) -> pd.Series:
    """The knee of a non-empty ``front`` (see the module docstring for the rule)."""
    steps = staircase(front, quality)
    best = steps.iloc[-1]  # cheapest first, so quality improves along it: the last is the best
    if len(steps) < 3:
        return best
    cost = steps["flops"].to_numpy(dtype=float)
    value = steps[quality.metric].to_numpy(dtype=float)
    x = (cost - cost.min()) / (cost.max() - cost.min())
    # 0 is the better end: accuracy flipped, perplexity as is
    span = value.max() - value.min()
    y = (value.max() - value) / span if quality.higher_is_better else (value - value.min()) / span
    # the chord runs from (0, 1) (cheapest, worst) to (1, 0) (dearest, best): x + y = 1; below it x + y < 1
    below = (1.0 - x - y) / np.sqrt(2.0)
    position = int(np.argmax(below))
    return steps.iloc[position] if below[position] > 0 else best
