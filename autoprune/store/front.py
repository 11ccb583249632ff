"""The trial table and its Pareto front (pandas), with hypervolume from pymoo.

Objectives: the task's quality (held-out accuracy, higher is better; a language model's
held-out perplexity, lower is better: :mod:`autoprune.store.quality`), FLOPs, params and
measured latency (lower is better). Only successful trials within every budget are on
the front.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from autoprune.searchers.base import TRIAL
from autoprune.space.latency_model import LatencyModel
from autoprune.store.quality import ACCURACY, Quality

#: (column, direction) of each objective
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("accuracy", "max"), ("flops", "min"), ("params", "min"), ("latency_ms", "min"),
)
METRIC_COLUMNS = ("accuracy", "perplexity", "loss", "kl_to_dense", "flops", "params", "flops_ratio", "params_ratio",
                  "latency_ms", "latency_iqr_ms", "decode_ms_per_token", "steps", "samples", "seconds")


def trials_table(records: list[dict[str, Any]], group_names: list[str], limits: dict[str, float],
                 latency_model: LatencyModel | None = None) -> pd.DataFrame:
    """One row per journaled trial: status, metrics, budget check and one column per group level.

    A latency limit is checked on the latency the search was held to, the latency model's
    prediction (column ``predicted_latency_ms``); ``latency_ms`` is what was measured.
    """
    rows = []
    for record in sorted(records, key=lambda r: r["trial_id"]):
        metrics = record.get("metrics") or {}
        row: dict[str, Any] = {"trial_id": record["trial_id"], "status": record["status"],
                               "fidelity": record["fidelity"], "eval_samples": record.get("eval_samples"),
                               "draw": record.get("draw", 0), "kind": record.get("kind", TRIAL),
                               "error": record.get("error"), "finished_at": record.get("finished_at", np.nan)}
        for column in METRIC_COLUMNS:
            row[column] = metrics.get(column, np.nan)
        for name, level in zip(group_names, record["levels"]):
            row[f"level:{name}"] = level
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if latency_model is not None:
        levels = np.array([record["levels"] for record in sorted(records, key=lambda r: r["trial_id"])])
        table["predicted_latency_ms"] = latency_model.predict(levels)
    within = table["status"] == "ok"
    for resource, limit in limits.items():
        column = "predicted_latency_ms" if resource == "latency" else resource
        within &= table[column] <= limit
    table.insert(2, "within_budget", within)
    return table


def levels_of(row: pd.Series, group_names: list[str]) -> np.ndarray:
    """The level vector of a trial-table row (its ``level:<group>`` columns, in ``group_names`` order)."""
    return np.array([int(row[f"level:{name}"]) for name in group_names], dtype=np.int64)


def _minimised(table: pd.DataFrame, objectives: tuple[tuple[str, str], ...]) -> np.ndarray:
    columns = [table[c].to_numpy(dtype=float) * (-1.0 if d == "max" else 1.0) for c, d in objectives]
    return np.column_stack(columns)


def last_stage(table: pd.DataFrame) -> pd.DataFrame:
    """The trials scored at the run's highest fidelity, and among those on the most held-out
    samples (all of them when ``eval_samples`` is empty).

    Staged searchers (darwin, tyr) score early stages after less retraining and on less
    data; those accuracies are not comparable with the last stage's, so only the last
    stage competes for the front. Searchers without stages have one stage: every trial."""
    if table.empty:
        return table
    eval_order = table["eval_samples"].astype(float).fillna(np.inf)
    at_top = table["fidelity"] == table["fidelity"].max()
    return table[at_top & (eval_order == eval_order[at_top].max())]


#: what a draw of training randomness changes: averaged over a candidate's draws on the front
DRAW_DEPENDENT = ("accuracy", "perplexity", "loss", "kl_to_dense", "latency_ms", "latency_iqr_ms",
                  "decode_ms_per_token")


def mean_over_draws(table: pd.DataFrame, identity: list[str]) -> pd.DataFrame:
    """One row per candidate: the first trial's, with its scores averaged over every trial
    of the same candidate (``identity`` columns equal, e.g. scored on several draws) and
    their number in ``draws``. A single score of a candidate scored several times would
    favour the luckiest, as the front's best accuracy would."""
    grouped = table.groupby(identity, sort=False, dropna=False)
    first = grouped.head(1).copy()
    means = grouped[[c for c in DRAW_DEPENDENT if c in table]].transform("mean").loc[first.index]
    first[means.columns] = means
    first["draws"] = grouped["trial_id"].transform("size").loc[first.index].to_numpy()
    return first


def objectives_for(quality: Quality) -> tuple[tuple[str, str], ...]:
    """The front's objectives with ``quality`` in accuracy's place."""
    return ((quality.metric, quality.goal),) + OBJECTIVES[1:]


def pareto_front(table: pd.DataFrame, objectives: tuple[tuple[str, str], ...] = OBJECTIVES) -> pd.DataFrame:
    """Non-dominated trials among those ok, within budget, of kind ``trial`` and at the last stage, best quality
    (the first objective) first; a candidate scored several times (on several draws) competes
    with its mean (:func:`mean_over_draws`)."""
    if table.empty:
        return table
    usable = [(c, d) for c, d in objectives if c in table and table[c].notna().any()]
    # measurements (a searcher's probes) are never candidates, whatever they scored
    candidates = table["within_budget"] & (table["kind"] == TRIAL)
    eligible = last_stage(table[candidates]).dropna(subset=[c for c, _ in usable])
    if eligible.empty:
        return eligible
    level_columns = [c for c in eligible.columns if c.startswith("level:")]
    eligible = mean_over_draws(eligible, level_columns + ["fidelity"])
    front_idx = NonDominatedSorting().do(_minimised(eligible, tuple(usable)), only_non_dominated_front=True)
    front = eligible.iloc[np.sort(front_idx)]
    first, goal = objectives[0]
    return front.sort_values([first, "flops"], ascending=[goal == "min", True]).reset_index(drop=True)


#: the cost objectives of the hypervolume: front column, dense key, name; each as a ratio to dense
HV_COSTS = (("flops", "flops", "FLOPs"), ("params", "params", "params"), ("latency_ms", "latency_ms", "latency"))


def _normalised(front: pd.DataFrame, dense: dict[str, float],
                quality: Quality) -> tuple[list[str], list[np.ndarray]]:
    """The hypervolume's objectives (names and columns): the quality's error, then every cost
    the dense model has and every front member measured, as a ratio to dense."""
    names = ["error"]
    columns = [quality.error(front[quality.metric].to_numpy(dtype=float), dense.get(quality.metric, np.nan))]
    for column, key, name in HV_COSTS:
        if key in dense and dense[key] and column in front and front[column].notna().all():
            names.append(name)
            columns.append(front[column].to_numpy(dtype=float) / dense[key])
    return names, columns


def reference_point(front: pd.DataFrame, dense: dict[str, float], quality: Quality = ACCURACY) -> dict[str, float]:
    """The hypervolume's fixed reference point, by objective, in its normalised units: the
    dense model's error plus the quality's margin (``Quality.hv_margin``: 25 points of
    accuracy; perplexity up to twice the dense model's), and 1.0 in every cost ratio (the
    dense model's FLOPs, params and latency). Fixed by the dense model alone, so runs of
    one model compare; a member worse in any objective than the point adds nothing."""
    names, _ = _normalised(front, dense, quality)
    dense_value = dense.get(quality.metric, np.nan)
    dense_error = float(quality.error(np.array([dense_value], dtype=float), dense_value)[0])
    error = dense_error + quality.hv_margin if np.isfinite(dense_error) else 1.0
    return {name: (error if name == "error" else 1.0) for name in names}


def describe_reference(reference: dict[str, float], dense: dict[str, float], quality: Quality = ACCURACY) -> str:
    """The reference point in words, for ``autoprune front`` and ``compare``."""
    costs = [name for name in reference if name != "error"]
    dense_value = dense.get(quality.metric, np.nan)
    dense_error = float(quality.error(np.array([dense_value], dtype=float), dense_value)[0])
    error = f"error {reference['error']:.4f}"
    if np.isfinite(dense_error):
        error += f" (the dense model's {dense_error:.4f} + {quality.hv_margin:g})"
    return f"{error}; {', '.join(costs) or 'no cost'} 1.0 (the dense model's)"


def hypervolume(front: pd.DataFrame, dense: dict[str, float], quality: Quality = ACCURACY) -> float:
    """Hypervolume of the front in normalised objectives (the quality's error, :meth:`Quality.error`,
    and cost ratios to dense) up to :func:`reference_point`: 0 for an empty front, larger is better."""
    if front.empty:
        return 0.0
    _, columns = _normalised(front, dense, quality)
    reference = reference_point(front, dense, quality)
    points = np.column_stack(columns)
    return float(HV(ref_point=np.array(list(reference.values())))(points))
