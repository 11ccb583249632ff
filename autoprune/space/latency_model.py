"""A latency model for use inside search: per-layer lookup tables summed per candidate.

As in NetAdapt and HALP, the latency of every convolution and linear layer is measured
once per device for each input/output channel count the search space allows; a
candidate's latency is predicted as ``scale * sum(table lookups) + offset``, where the
affine calibration (fitted on a few end-to-end measurements) absorbs what the tables do
not see (BatchNorm, activations, framework overhead). Pure numpy, so searchers use it
without torch; :mod:`autoprune.evaluation.latency_table` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LayerTable:
    """Milliseconds of one layer, indexed by (level of its input group, level of its output
    group); a side no group prunes has a single entry."""

    name: str
    in_group: int
    out_group: int
    table: np.ndarray

    def lookup(self, levels: np.ndarray) -> np.ndarray:
        rows = levels[:, self.in_group] if self.in_group >= 0 else np.zeros(len(levels), dtype=np.int64)
        cols = levels[:, self.out_group] if self.out_group >= 0 else np.zeros(len(levels), dtype=np.int64)
        return self.table[rows, cols]


@dataclass
class LatencyModel:
    """Predicted milliseconds of any candidate, for one device, thread count and batch size."""

    layers: list[LayerTable]
    scale: float = 1.0
    offset: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)

    def layer_sum(self, levels: np.ndarray) -> np.ndarray:
        arr = np.atleast_2d(np.asarray(levels, dtype=np.int64))
        total = np.zeros(len(arr))
        for layer in self.layers:
            total += layer.lookup(arr)
        return total

    def predict(self, levels: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each row of ``levels`` (a 1-D vector is one row)."""
        return self.scale * self.layer_sum(levels) + self.offset

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale, "offset": self.offset, "context": self.context,
            "layers": [{"name": l.name, "in_group": l.in_group, "out_group": l.out_group,
                        "table": l.table.round(6).tolist()} for l in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyModel":
        layers = [LayerTable(name=l["name"], in_group=int(l["in_group"]), out_group=int(l["out_group"]),
                             table=np.array(l["table"], dtype=float)) for l in data["layers"]]
        return cls(layers=layers, scale=float(data["scale"]), offset=float(data["offset"]),
                   context=dict(data.get("context", {})))
