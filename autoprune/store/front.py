"""The trial table and its Pareto front (pandas), with hypervolume from pymoo.

Objectives: held-out accuracy (higher is better), FLOPs, params and measured latency
(lower is better). Only successful trials within every budget are on the front.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

#: (column, direction) of each objective
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("accuracy", "max"), ("flops", "min"), ("params", "min"), ("latency_ms", "min"),
)
METRIC_COLUMNS = ("accuracy", "loss", "flops", "params", "flops_ratio", "params_ratio", "latency_ms",
                  "latency_iqr_ms", "steps", "samples", "seconds")


def trials_table(records: list[dict[str, Any]], group_names: list[str], limits: dict[str, float]) -> pd.DataFrame:
    """One row per journaled trial: status, metrics, budget check and one column per group level."""
    rows = []
    for record in sorted(records, key=lambda r: r["trial_id"]):
        metrics = record.get("metrics") or {}
        row: dict[str, Any] = {"trial_id": record["trial_id"], "status": record["status"],
                               "fidelity": record["fidelity"], "error": record.get("error")}
        for column in METRIC_COLUMNS:
            row[column] = metrics.get(column, np.nan)
        for name, level in zip(group_names, record["levels"]):
            row[f"level:{name}"] = level
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    within = table["status"] == "ok"
    for resource, limit in limits.items():
        column = "latency_ms" if resource == "latency" else resource
        within &= table[column] <= limit
    table.insert(2, "within_budget", within)
    return table


def _minimised(table: pd.DataFrame, objectives: tuple[tuple[str, str], ...]) -> np.ndarray:
    columns = [table[c].to_numpy(dtype=float) * (-1.0 if d == "max" else 1.0) for c, d in objectives]
    return np.column_stack(columns)


def pareto_front(table: pd.DataFrame, objectives: tuple[tuple[str, str], ...] = OBJECTIVES) -> pd.DataFrame:
    """Non-dominated trials among those ok and within budget, best accuracy first."""
    if table.empty:
        return table
    usable = [(c, d) for c, d in objectives if c in table and table[c].notna().any()]
    eligible = table[table["within_budget"]].dropna(subset=[c for c, _ in usable])
    if eligible.empty:
        return eligible
    # identical allocations evaluated twice would dominate nobody; keep the first
    level_columns = [c for c in eligible.columns if c.startswith("level:")]
    eligible = eligible.drop_duplicates(subset=level_columns + ["fidelity"])
    front_idx = NonDominatedSorting().do(_minimised(eligible, tuple(usable)), only_non_dominated_front=True)
    front = eligible.iloc[np.sort(front_idx)]
    return front.sort_values(["accuracy", "flops"], ascending=[False, True]).reset_index(drop=True)


def hypervolume(front: pd.DataFrame, dense: dict[str, float]) -> float:
    """Hypervolume of the front in normalised objectives (error rate and cost ratios to dense),
    with reference point 1 in every objective: 0 for an empty front, larger is better."""
    if front.empty:
        return 0.0
    columns = [1.0 - front["accuracy"].to_numpy(dtype=float)]
    for column, key in (("flops", "flops"), ("params", "params"), ("latency_ms", "latency_ms")):
        if key in dense and dense[key] and front[column].notna().all():
            columns.append(front[column].to_numpy(dtype=float) / dense[key])
    points = np.column_stack(columns)
    return float(HV(ref_point=np.ones(points.shape[1]))(points))
