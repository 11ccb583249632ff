"""Exact FLOPs and params of any candidate, from kept channel counts alone.

Every layer's cost is a product of (at most) two channel counts, its inputs and its
outputs, each of which is a fixed number plus a multiple of some group's kept count.
Summed over layers, a resource is therefore a quadratic form in the vector ``k`` of kept
counts per group::

    cost(k) = constant + linear · k + k · quadratic · k

with integer coefficients. Evaluating it is two matrix products, so millions of
candidates are priced per second and no model is built. ``tests/space`` checks it
against counting the materialised model, exactly, for every model of the zoo.

A group that can be removed entirely (a transformer's attention or MLP sub-block at
kept count 0) takes its fixed parts with it: the normalisation in front of it, an
output bias, key/value projections that do not shrink with the query heads. A
quadratic form cannot express such a step at zero, so a *presence* term is added::

    cost(k) = constant + linear · k + k · quadratic · k + presence · [k > 0]

Where a cost is integer only at the kept counts a group can take (a key/value head
shared by three query heads costs a third of it per query head), every coefficient is
stored multiplied by ``denominator`` and the sum divided by it, exactly.

Spaces without removable groups have no presence term and a denominator of 1, and their
serialised form is unchanged (a run.json written before either existed loads as before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass
class QuadraticCost:
    """``(constant + linear·k + k·quadratic·k + presence·[k>0]) / denominator`` over ``n_groups``
    kept counts (int64)."""

    n_groups: int
    constant: int = 0
    linear: np.ndarray = field(default=None)  # type: ignore[assignment]
    quadratic: np.ndarray = field(default=None)  # type: ignore[assignment]
    presence: np.ndarray = field(default=None)  # type: ignore[assignment]
    denominator: int = 1

    def __post_init__(self) -> None:
        if self.linear is None:
            self.linear = np.zeros(self.n_groups, dtype=np.int64)
        if self.quadratic is None:
            self.quadratic = np.zeros((self.n_groups, self.n_groups), dtype=np.int64)
        if self.presence is None:
            self.presence = np.zeros(self.n_groups, dtype=np.int64)
        self.linear = np.asarray(self.linear, dtype=np.int64)
        self.quadratic = np.asarray(self.quadratic, dtype=np.int64)
        self.presence = np.asarray(self.presence, dtype=np.int64)
        if self.presence.shape != (self.n_groups,):
            raise ValueError(f"presence must have one entry per group ({self.n_groups}), got shape {self.presence.shape}")
        if self.denominator < 1:
            raise ValueError(f"denominator must be a positive integer, got {self.denominator}")

    def add_product(self, a: "LinearCount", b: "LinearCount", factor: int | Fraction) -> None:
        """Add ``factor * a * b`` where ``a`` and ``b`` are affine in the kept counts.

        ``factor`` may be a fraction (a grouped convolution's weights are ``out * in / groups``)
        whose denominator divides :attr:`denominator`; every coefficient is stored times
        :attr:`denominator`, so the sum stays exact in integers."""
        scaled = Fraction(factor) * self.denominator
        if scaled.denominator != 1:
            raise ValueError(f"factor {factor} needs a denominator dividing {self.denominator}")
        factor = int(scaled)
        self.constant += factor * a.constant * b.constant
        for g, m in a.terms.items():
            self.linear[g] += factor * m * b.constant
        for g, m in b.terms.items():
            self.linear[g] += factor * m * a.constant
        for ga, ma in a.terms.items():
            for gb, mb in b.terms.items():
                self.quadratic[ga, gb] += factor * ma * mb

    def add_count(self, a: "LinearCount", factor: int | Fraction) -> None:
        """Add ``factor * a``."""
        self.add_product(a, LinearCount(constant=1), factor)

    def add_presence(self, group: int, amount: int) -> None:
        """Add ``amount`` (already times :attr:`denominator`) while ``group`` keeps at least
        one unit (its fixed parts)."""
        self.presence[group] += amount

    def __call__(self, kept: np.ndarray) -> np.ndarray:
        """Cost of each row of ``kept`` (shape (n, n_groups) or (n_groups,))."""
        k = np.asarray(kept, dtype=np.int64)
        single = k.ndim == 1
        k2 = np.atleast_2d(k)
        out = self.constant + k2 @ self.linear + np.einsum("ni,ij,nj->n", k2, self.quadratic, k2)
        if self.presence.any():
            out = out + (k2 > 0).astype(np.int64) @ self.presence
        if self.denominator != 1:
            out = out // self.denominator
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the quadratic part is stored sparsely, presence only when used."""
        nz = np.argwhere(self.quadratic != 0)
        data: dict[str, Any] = {
            "n_groups": self.n_groups,
            "constant": int(self.constant),
            "linear": [int(v) for v in self.linear],
            "quadratic": [[int(i), int(j), int(self.quadratic[i, j])] for i, j in nz],
        }
        if self.presence.any():
            data["presence"] = [int(v) for v in self.presence]
        if self.denominator != 1:
            data["denominator"] = int(self.denominator)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuadraticCost":
        n = int(data["n_groups"])
        quadratic = np.zeros((n, n), dtype=np.int64)
        for i, j, v in data["quadratic"]:
            quadratic[i, j] = v
        presence = np.array(data["presence"]) if "presence" in data else None
        return cls(n_groups=n, constant=int(data["constant"]), linear=np.array(data["linear"]),
                   quadratic=quadratic, presence=presence, denominator=int(data.get("denominator", 1)))


@dataclass
class LinearCount:
    """A channel count ``constant + sum(multiplier * kept[group])``.

    A convolution's input count is usually one group's kept count; a linear layer after
    flattening a (C, H, W) map has ``H*W`` inputs per kept channel (multiplier ``H*W``);
    a layer nobody prunes is a constant.
    """

    constant: int = 0
    terms: dict[int, int] = field(default_factory=dict)

    def add(self, group: int, multiplier: int) -> None:
        self.terms[group] = self.terms.get(group, 0) + multiplier
