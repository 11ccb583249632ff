"""Pick one trial: by id, or the best on the front under constraints.

Spec grammar (clauses joined by commas)::

    12 | trial=12                  that trial
    best                           best accuracy on the front
    flops<=0.3                     FLOPs at most 30% of dense (a value > 1 is absolute MACs)
    params<=2e5                    params, likewise relative or absolute
    latency<=2ms | latency<=0.5    measured latency, absolute or relative to dense
    accuracy>=0.95                 held-out accuracy
    best=flops                     optimise another objective (accuracy by default)
    searcher                       the searcher's own choice (darwin: its last parent),
                                   which weighs the searcher's evidence rather than one score
    auto                           ``searcher`` where the run's searcher keeps a choice, else
                                   ``best`` (the default of ``export``)

Why ``auto``: the front's best held-out accuracy is the maximum of many noisy
short-retraining scores. On six darwin runs on resnet20
(experiments/results/finalist_retraining.md) it was darwin's choice in three; retrained
with the final recipe, the other three ended 2.1 and 0.8 points below it and 0.3 above.
"""

from __future__ import annotations

import re

import pandas as pd

from autoprune.errors import UserError

_CLAUSE = re.compile(r"^\s*(flops|params|latency|accuracy)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*(ms)?\s*$")
_BEST = {"accuracy": ("accuracy", False), "flops": ("flops", True), "params": ("params", True),
         "latency": ("latency_ms", True)}


def pick_row(trials: pd.DataFrame, front: pd.DataFrame, spec: str | int, dense: dict[str, float],
             incumbent: int | None = None) -> pd.Series:
    """The trial-table row ``spec`` names; a clear error when nothing matches.
    ``incumbent``: the trial the run's searcher chose (run.json), for ``searcher``."""
    text = str(spec).strip()
    if text == "auto":
        text = "best" if incumbent is None else "searcher"
    if text == "searcher":
        if incumbent is None:
            raise UserError("--pick searcher: this run's searcher keeps no choice of its own (darwin and tyr do); "
                            "pick from the front instead, e.g. --pick best.")
        text = str(incumbent)
    trial_match = re.fullmatch(r"(?:trial\s*=\s*)?(\d+)", text)
    if trial_match:
        trial_id = int(trial_match.group(1))
        rows = trials[trials["trial_id"] == trial_id] if not trials.empty else trials
        if rows.empty:
            raise UserError(f"there is no trial {trial_id} in this run; `autoprune front RUN_DIR` lists them.")
        row = rows.iloc[0]
        if row["status"] != "ok":
            raise UserError(f"trial {trial_id} failed ({row['error']}); pick another.")
        return row
    if front.empty:
        raise UserError("the run has no successful trial within budget yet, so there is nothing to pick.")
    candidates = front
    objective, ascending = "accuracy", False
    for clause in filter(None, (c.strip() for c in text.split(","))):
        if clause == "best":
            continue
        if clause.startswith("best="):
            key = clause.split("=", 1)[1].strip()
            if key not in _BEST:
                raise UserError(f"--pick {text!r}: cannot optimise {key!r}; choose one of {', '.join(_BEST)}.")
            objective, ascending = _BEST[key]
            continue
        match = _CLAUSE.match(clause)
        if not match:
            raise UserError(
                f"--pick {text!r}: clause {clause!r} is not understood; use a trial id, or e.g. "
                "'flops<=0.3', 'latency<=2ms', 'accuracy>=0.95', 'best=params'."
            )
        candidates = candidates[_condition(candidates, match, dense, text)]
    if candidates.empty:
        raise UserError(f"no front member satisfies --pick {text!r}; `autoprune front RUN_DIR` shows the front.")
    return candidates.sort_values([objective, "trial_id"], ascending=[ascending, True]).iloc[0]


def _condition(table: pd.DataFrame, match: re.Match, dense: dict[str, float], text: str) -> pd.Series:
    key, op, number, unit = match.groups()
    try:
        value = float(number)
    except ValueError:
        raise UserError(f"--pick {text!r}: {number!r} is not a number.") from None
    column = {"latency": "latency_ms"}.get(key, key)
    if key in ("flops", "params") and value <= 1:
        value *= dense[key]
    elif key == "latency" and unit != "ms":
        value *= dense["latency_ms"]
    series = table[column]
    return {"<=": series <= value, "<": series < value, ">=": series >= value, ">": series > value}[op]
