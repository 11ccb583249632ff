"""What "better" means on a run's front: the task's quality metric and its direction.

A classifier's front maximises held-out accuracy; a language model's minimises held-out
perplexity. run.json records the metric (``quality``), so the front, ``pick``, the summary
and the hypervolume of a run read it from there; runs made before it was recorded are
classifier runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autoprune.errors import UserError


@dataclass(frozen=True)
class Quality:
    """The metric a front ranks by (``metric``, a trial-table column) and whether higher is better."""

    metric: str
    goal: str
    #: how the metric is named to a user
    label: str
    #: how much worse than the dense model's :meth:`error` a candidate may be and still add
    #: to the hypervolume (its reference point is the dense error plus this margin)
    hv_margin: float = 0.25

    def __post_init__(self) -> None:
        if self.goal not in ("max", "min"):
            raise ValueError(f"goal must be 'max' or 'min', got {self.goal!r}")

    @property
    def higher_is_better(self) -> bool:
        return self.goal == "max"

    def error(self, values: np.ndarray, dense_value: float) -> np.ndarray:
        """A loss in [0, 1] that is 0 at perfect quality, for the hypervolume.

        Accuracy: the error rate. Perplexity: ``1 - dense / perplexity``, the share of the
        dense model's quality lost (0 when as good as dense, towards 1 as perplexity grows);
        clipped at 0 for a candidate better than dense."""
        values = np.asarray(values, dtype=float)
        if self.metric == "accuracy":
            return 1.0 - values
        return np.clip(1.0 - dense_value / values, 0.0, 1.0)

    def format(self, value: float) -> str:
        return f"{value:.4f}" if self.metric == "accuracy" else f"{value:.3f}"

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "goal": self.goal, "label": self.label}


#: 25 points of accuracy below the dense model's
ACCURACY = Quality(metric="accuracy", goal="max", label="held-out accuracy", hv_margin=0.25)
#: up to twice the dense model's perplexity (error 1 - dense / perplexity up to 0.5)
PERPLEXITY = Quality(metric="perplexity", goal="min", label="held-out perplexity", hv_margin=0.5)
QUALITIES = {q.metric: q for q in (ACCURACY, PERPLEXITY)}


def quality_of(info: dict[str, Any]) -> Quality:
    """The quality metric run.json names (accuracy for runs that name none)."""
    stored = info.get("quality")
    if stored is None:
        return ACCURACY
    metric = stored.get("metric") if isinstance(stored, dict) else None
    if metric not in QUALITIES:
        raise UserError(f"run.json names the quality metric {metric!r}, which this version of autoprune does not "
                        f"know ({', '.join(QUALITIES)}); the run cannot be read.")
    return QUALITIES[metric]
