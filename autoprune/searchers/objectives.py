"""Objectives of a multi-objective search: held-out error and the costs of a candidate.

A front searcher minimises several of these at once. ``error`` (1 - held-out accuracy)
comes from an evaluated result; the costs come from the level vector alone, relative to
the dense model so every objective lies on a comparable scale: ``flops`` and ``params``
from the exact cost model, ``latency`` from the problem's latency model (the same one a
latency budget is checked with, reached through ``Constraints.usage`` as
:mod:`~autoprune.searchers.mutation` does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from autoprune.searchers.base import Problem, Result

logger = logging.getLogger(__name__)

#: every objective a front searcher may minimise
OBJECTIVES = ("error", "flops", "params", "latency")
#: the error a failed or unscored candidate counts with (no model is worse than chance)
FAILED_ERROR = 1.0


def names_latency(objectives: object) -> bool:
    """Whether ``objectives`` (a list or the CLI's ``error,flops,latency``) name latency;
    anything malformed is left for :func:`check_objectives` to refuse."""
    if isinstance(objectives, str):
        objectives = objectives.split(",")
    if not isinstance(objectives, Sequence):
        return False
    return any(isinstance(o, str) and o.strip().lower() == "latency" for o in objectives)


def check_objectives(objectives: object, problem: Problem) -> tuple[str, ...]:
    """Validated objective names: at least two, distinct, known, ``error`` among them, and
    ``latency`` only where the problem has a latency model."""
    if isinstance(objectives, str):
        objectives = [o.strip() for o in objectives.split(",")]  # the CLI's ``objectives=error,flops``
    if not isinstance(objectives, Sequence) or not all(isinstance(o, str) for o in objectives):
        raise ValueError(f"objectives must be a list of names from {list(OBJECTIVES)}, got {objectives!r}")
    names = tuple(o.strip().lower() for o in objectives)
    unknown = [o for o in names if o not in OBJECTIVES]
    if unknown:
        raise ValueError(f"objectives {unknown} are unknown; choose two or more of {list(OBJECTIVES)}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"objectives must name two or more different objectives, got {list(names)}")
    if "error" not in names:
        raise ValueError(f"objectives must include error (a front of costs alone is the sparsest model), "
                         f"got {list(names)}")
    if "latency" in names and problem.constraints.latency_model is None:
        raise ValueError("objective latency needs the run's latency model, which this problem lacks")
    return names


def cost_objectives(problem: Problem, names: Sequence[str], levels: np.ndarray) -> np.ndarray:
    """The cost objectives among ``names`` of each row of ``levels``, relative to dense,
    shape (rows, len(names)); the ``error`` column is left NaN for the results to fill."""
    space = problem.space
    arr = np.atleast_2d(np.asarray(levels, dtype=np.int64))
    out = np.full((len(arr), len(names)), np.nan)
    for j, name in enumerate(names):
        if name in ("flops", "params"):
            out[:, j] = space.relative_cost(name, arr)
        elif name == "latency":
            model = problem.constraints.latency_model
            assert model is not None, "checked by check_objectives"
            out[:, j] = model.predict(arr) / float(model.predict(space.dense_candidate())[0])
    return out


def error_of(result: Result) -> float | None:
    """The ``error`` objective of an ok result: 1 - held-out accuracy for a classifier, and
    for a language model (no accuracy) its held-out KL to the dense model, the fitness
    DarwinLM and Týr rank by (0 for the dense model, larger when worse); None when the
    trial failed or has neither as a finite number."""
    if not result.ok:
        return None
    accuracy = result.metrics.get("accuracy")
    if accuracy is not None:
        return 1.0 - float(accuracy) if math.isfinite(accuracy) else None
    kl = result.metrics.get("kl_to_dense")
    return float(kl) if kl is not None and math.isfinite(kl) else None


def budget_violation(problem: Problem, levels: np.ndarray) -> np.ndarray:
    """Per bounded resource, ``usage / limit - 1`` of each row (<= 0 within budget), the
    form pymoo takes inequality constraints in; shape (rows, resources)."""
    limits = problem.constraints.limits
    used = problem.constraints.usage(problem.space, np.atleast_2d(levels))
    return np.stack([used[r] / limits[r] - 1.0 for r in limits], axis=1)
