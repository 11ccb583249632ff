"""Budgets: upper bounds on FLOPs, params or latency, relative or absolute.

``flops=0.4`` is at most 40% of the dense model's FLOPs; ``flops=20M`` is at most 20
million MACs; ``params=1.5e6`` an absolute count; ``latency=3ms`` or ``latency=0.6``
(relative to the dense model measured on the same device). Several budgets must all hold.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from autoprune.errors import UserError
from autoprune.space.latency_model import LatencyModel
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

RESOURCES = ("flops", "params", "latency")
COUNT_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
TIME_SUFFIX = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_SPEC = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*(\S.*?)\s*$")
_QUANTITY = re.compile(r"^([0-9.eE+-]+)\s*([A-Za-z]*)$")


@dataclass(frozen=True)
class Budget:
    """One bound: ``resource`` at most ``value``, relative to dense when ``relative``.

    Absolute latency is in milliseconds; absolute FLOPs are MACs.
    """

    resource: str
    value: float
    relative: bool
    text: str

    def limit(self, dense_value: float) -> float:
        """The bound in absolute units, given the dense model's value."""
        return self.value * dense_value if self.relative else self.value


def parse_budget(text: str) -> Budget:
    """Parse ``key=value[unit]``; raise :class:`UserError` with the reason when malformed."""
    match = _SPEC.match(text)
    if not match:
        raise UserError(f"budget {text!r} is not of the form key=value, e.g. flops=0.4, params=1.5e6 or latency=3ms.")
    key = match.group(1).lower()
    if key not in RESOURCES:
        raise UserError(f"budget {text!r} has unknown key {key!r}; known keys: {', '.join(RESOURCES)}.")
    value, unit = parse_quantity(match.group(2), what=f"budget {text!r}")
    if value <= 0:
        raise UserError(f"budget {text!r} must be positive: a ratio in (0, 1] or an absolute value with a unit.")
    if key == "latency":
        if unit:
            if unit not in TIME_SUFFIX:
                raise UserError(f"budget {text!r} has unknown unit {unit!r}; latency takes us, ms or s, or a ratio in (0, 1].")
            return Budget(key, _finite(value * TIME_SUFFIX[unit], text), relative=False, text=text.strip())
        return Budget(key, _ratio(value, text), relative=True, text=text.strip())
    if unit not in COUNT_SUFFIX:
        raise UserError(f"budget {text!r} has unknown unit {unit!r}; {key} takes K, M, G or T, or a ratio in (0, 1].")
    if unit or value > 1:
        return Budget(key, _finite(value * COUNT_SUFFIX[unit], text), relative=False, text=text.strip())
    return Budget(key, _ratio(value, text), relative=True, text=text.strip())


def parse_quantity(text: str, *, what: str) -> tuple[float, str]:
    """``0.4``, ``20M``, ``3 ms`` as (number, lower-case unit); a clear error otherwise,
    also for a number too large to be finite (``1e400``: nan and inf are not numbers here)."""
    match = _QUANTITY.match(text.strip())
    try:
        value, unit = float(match.group(1)), match.group(2).lower()  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise UserError(f"{what}: {text.strip()!r} is not a number (optionally with a unit, as in 20M or 3ms).") from None
    if not math.isfinite(value):
        raise UserError(f"{what}: {text.strip()!r} is too large to be a finite number.")
    return value, unit


def _finite(value: float, text: str) -> float:
    """An absolute bound after its unit was applied, refused if that overflowed."""
    if not math.isfinite(value):
        raise UserError(f"budget {text!r} is too large to be a finite number; give a smaller value.")
    return value


def _ratio(value: float, text: str) -> float:
    if not 0 < value <= 1:
        raise UserError(f"budget {text!r}: a ratio must lie in (0, 1]; give an absolute value with a unit instead.")
    return value


def _round_up(ratio: float) -> float:
    """A ratio rounded up to 3 decimals, so that the suggested budget is itself reachable."""
    return min(1.0, math.ceil(ratio * 1000 - 1e-9) / 1000)


def parse_budgets(texts: list[str]) -> list[Budget]:
    """Parse every budget; a resource given twice is refused (which one would hold?)."""
    budgets = [parse_budget(t) for t in texts]
    seen: set[str] = set()
    for b in budgets:
        if b.resource in seen:
            raise UserError(f"budget for {b.resource} is given twice; give each resource once.")
        seen.add(b.resource)
    return budgets


@dataclass(frozen=True)
class Constraints:
    """Budgets resolved to absolute limits for one model: what a searcher must respect.

    FLOPs and params are checked from the level vector alone (exact cost model); latency
    from the level vector through the per-layer latency tables of ``latency_model``.
    """

    limits: dict[str, float]
    latency_model: LatencyModel | None = None

    def usage(self, space: SearchSpace, levels: np.ndarray) -> dict[str, np.ndarray]:
        """Each bounded resource of each candidate (rows of ``levels``; 1-D is one row)."""
        arr = np.atleast_2d(levels)
        used: dict[str, np.ndarray] = {}
        for resource in self.limits:
            if resource == "latency":
                if self.latency_model is None:
                    raise ValueError("a latency limit needs a latency model")
                used[resource] = self.latency_model.predict(arr)
            else:
                used[resource] = space.cost(resource, arr)
        return used

    def feasible(self, space: SearchSpace, levels: np.ndarray) -> np.ndarray:
        """Boolean per candidate (rows of ``levels``; 1-D is one row): within every limit."""
        ok = np.ones(len(np.atleast_2d(levels)), dtype=bool)
        for resource, used in self.usage(space, levels).items():
            ok &= used <= self.limits[resource]
        return ok

    def slack(self, space: SearchSpace, levels: np.ndarray) -> np.ndarray:
        """Smallest fraction of any limit still unused (negative when over)."""
        slack = np.full(len(np.atleast_2d(levels)), np.inf)
        for resource, used in self.usage(space, levels).items():
            slack = np.minimum(slack, 1.0 - used / self.limits[resource])
        return slack

    def to_dict(self) -> dict[str, float]:
        return dict(self.limits)


def resolve(budgets: list[Budget], space: SearchSpace, latency_model: LatencyModel | None = None) -> Constraints:
    """Absolute limits for ``space``'s model; refuse a budget no candidate can meet.

    The message names the smallest achievable value so the user knows what to ask for.
    Relative latency is relative to the dense model's latency as the model predicts it.
    """
    limits: dict[str, float] = {}
    sparsest = space.sparsest_candidate()
    for b in budgets:
        if b.resource in ("flops", "params"):
            dense = float(space.dense[b.resource])
            smallest = float(space.cost(b.resource, sparsest))
            unit = " MACs" if b.resource == "flops" else ""
            shown = f"{smallest:,.0f}{unit}"
        else:
            if latency_model is None:
                raise ValueError("latency budgets need a latency model")
            dense = float(latency_model.predict(space.dense_candidate())[0])
            smallest = float(latency_model.predict(sparsest)[0])
            shown = f"{smallest:.3f} ms predicted where the trials run"
        limit = b.limit(dense)
        if smallest > limit:
            # a bare number above 1 is an absolute count; someone who meant a ratio should hear so
            bare = not re.search(r"[A-Za-z]\s*$", b.text)  # a number without a unit
            tiny_count = b.resource != "latency" and not b.relative and bare
            read_as = (f" ({b.text} is read as {b.value:g}{unit or ' params'}: ratios lie in (0, 1], absolute "
                       "counts take a unit such as 20M)") if tiny_count else ""
            raise UserError(
                f"budget {b.text} is unreachable{read_as}: the smallest model of this search space has "
                f"{smallest / dense:.4f} of the dense {b.resource} ({shown}); "
                f"ask for at least {b.resource}={_round_up(smallest / dense)}."
            )
        if dense <= limit:  # e.g. latency=5ms for a 0.3 ms model: a search would hand back the dense model
            logger.warning("budget %s does not bind: the dense model already meets it; ask for less of it to prune",
                           b.text)
        limits[b.resource] = float(limit)
    return Constraints(limits=limits, latency_model=latency_model)
