"""Pick one trial: by id, or the best on the front under constraints.

Spec grammar (clauses joined by commas or spaces; keys and units as in budgets)::

    12 | trial=12                  that trial
    best                           best quality on the front (accuracy; a language model's
                                   perplexity)
    flops<=0.3                     FLOPs at most 30% of dense (flops<=20M, or a bare value > 1:
                                   absolute MACs)
    params<=2e5 | params<=30K      params, likewise relative or absolute
    latency<=2ms | latency<=0.5    measured latency, absolute (us, ms, s) or relative to dense
    accuracy>=0.95                 held-out accuracy
    perplexity<=20 | kl<=0.5       a language model's held-out perplexity, KL to the dense model
    best=flops                     optimise another objective (the quality by default)
    knee                           the front member where quality against FLOPs bends
                                   (rule: :mod:`autoprune.knee`); with constraints, the
                                   knee of the members that meet them
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

import math
import numbers
import re

import pandas as pd

from autoprune.errors import UserError
from autoprune.knee import knee_row
from autoprune.space.budget import COUNT_SUFFIX, TIME_SUFFIX, parse_quantity
from autoprune.store.quality import ACCURACY, Quality

_CLAUSE = re.compile(r"^(flops|params|latency|accuracy|perplexity|kl)(<=|>=|<|>)(.+)$")
_COLUMN = {"flops": "flops", "params": "params", "latency": "latency_ms", "accuracy": "accuracy",
           "perplexity": "perplexity", "kl": "kl_to_dense"}
_BEST = {"accuracy": ("accuracy", False), "perplexity": ("perplexity", True), "kl": ("kl_to_dense", True),
         "flops": ("flops", True), "params": ("params", True), "latency": ("latency_ms", True)}


def pick_row(trials: pd.DataFrame, front: pd.DataFrame, spec: str | int, dense: dict[str, float],
             incumbent: int | None = None, searcher: str | None = None, quality: Quality = ACCURACY) -> pd.Series:
    """The trial-table row ``spec`` names; a clear error when nothing matches.
    ``quality``: what ``best`` maximises (accuracy) or minimises (perplexity).
    ``incumbent``: the trial the run's searcher chose (run.json), for ``searcher``;
    ``searcher``: its name, to say why there is no choice yet."""
    if not isinstance(spec, (str, numbers.Integral)) or isinstance(spec, bool):  # numpy ids from a table too
        raise UserError(f"pick takes a trial id or a text such as 'best' or 'flops<=0.3', "
                        f"got a {type(spec).__name__}.")
    said = str(int(spec) if isinstance(spec, numbers.Integral) else spec).strip()  # quoted back in errors
    text = said.lower()
    if text == "auto":
        text = "best" if incumbent is None else "searcher"
    if text == "searcher":
        if incumbent is None:
            raise UserError(_no_choice(searcher))
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
    objective, ascending = quality.metric, not quality.higher_is_better
    used: list[str] = []
    knee = False
    # spaces around an operator or before a unit belong to the clause; other spaces separate
    # clauses, as commas do
    compact = re.sub(r"\s*(<=|>=|<|>|=)\s*", r"\1", text)
    compact = re.sub(r"(\d)\s+(us|ms|s|k|m|g|t)(?=[,\s]|$)", r"\1\2", compact)
    for clause in filter(None, re.split(r"[,\s]+", compact)):
        if clause == "best":
            continue
        if clause == "knee":
            knee = True
            continue
        if clause.startswith("best="):
            key = clause.split("=", 1)[1].strip()
            if key not in _BEST:
                raise UserError(f"--pick {said!r}: cannot optimise {key!r}; choose one of {', '.join(_BEST)}.")
            objective, ascending = _BEST[key]
            continue
        match = _CLAUSE.match(clause)
        if not match:
            raise UserError(
                f"--pick {said!r}: clause {clause!r} is not understood; use a trial id, or e.g. "
                "'flops<=0.3', 'latency<=2ms', 'accuracy>=0.95', 'best=params'."
            )
        candidates = candidates[_condition(candidates, match, dense, said)]
        used.append(match.group(1))
    if candidates.empty:
        raise UserError(f"no front member satisfies --pick {said!r}; {_front_range(front, used, dense)}.")
    if knee:
        if (objective, ascending) != (quality.metric, not quality.higher_is_better):
            raise UserError(f"--pick {said!r}: knee and best= each choose the member; give one of them.")
        return knee_row(candidates, quality)
    return candidates.sort_values([objective, "trial_id"], ascending=[ascending, True]).iloc[0]


def _no_choice(searcher: str | None) -> str:
    """Why ``--pick searcher`` has nothing to pick (each searcher declares whether it keeps a choice)."""
    from autoprune.searchers import SEARCHERS

    cls = SEARCHERS.get(searcher or "")
    if cls is not None and cls.keeps_choice:
        return (f"--pick searcher: {searcher} has not chosen yet (it chooses at {cls.choice_after}); extend the run "
                "with `autoprune search --resume RUN_DIR --trials N` (the search said at its start how many trials "
                "that takes), or pick from the front, e.g. --pick best.")
    keepers = " and ".join(sorted(name for name, c in SEARCHERS.items() if c.keeps_choice))
    return (f"--pick searcher: this run's searcher keeps no choice of its own ({keepers} do); "
            "pick from the front instead, e.g. --pick best.")


def _front_range(front: pd.DataFrame, keys: list[str], dense: dict[str, float]) -> str:
    """What the front spans in the constrained quantities, so the user knows what to ask for."""
    spans = []
    for key in dict.fromkeys(keys):
        values = front[_COLUMN[key]].dropna()
        if values.empty:
            continue
        low, high = values.min(), values.max()
        if key in ("flops", "params"):
            spans.append(f"{key} {low / dense[key]:.3f}-{high / dense[key]:.3f} of dense")
        elif key == "latency":
            spans.append(f"latency {low:.3g}-{high:.3g} ms")
        elif key == "accuracy":
            spans.append(f"accuracy {low:.4f}-{high:.4f}")
        else:
            spans.append(f"{key} {low:.4g}-{high:.4g}")
    span = f"its {len(front)} front members have {', '.join(spans)}" if spans else "see the front"
    return f"{span} (`autoprune front RUN_DIR` lists them)"


def _condition(table: pd.DataFrame, match: re.Match, dense: dict[str, float], text: str) -> pd.Series:
    key, op, quantity = match.groups()
    value, unit = parse_quantity(quantity, what=f"--pick {text!r}")
    # no unit: a ratio of dense for latency (and for flops and params up to 1), a plain number for quality
    units = {"latency": {"": 1.0, **TIME_SUFFIX}, "flops": COUNT_SUFFIX, "params": COUNT_SUFFIX}.get(key, {"": 1.0})
    if unit not in units:
        allowed = [u for u in units if u]
        raise UserError(f"--pick {text!r}: {key} takes " + (f"no unit {unit!r}; use one of {', '.join(allowed)}, or "
                        "none for a ratio of dense." if allowed else f"a plain number, not {unit!r}."))
    if key == "accuracy" and not 0 <= value <= 1:
        raise UserError(f"--pick {text!r}: accuracy is a fraction in [0, 1], e.g. accuracy>=0.9.")
    if key != "accuracy" and value <= 0:
        raise UserError(f"--pick {text!r}: a {key} bound must be positive, a ratio of dense in (0, 1] or a value "
                        "with a unit.")
    if key in ("flops", "params") and not unit and value <= 1:
        value *= dense[key]  # a ratio of dense
    elif key == "latency" and not unit:
        if not dense.get("latency_ms"):
            raise UserError(f"--pick {text!r}: this run did not measure the dense model's latency; give latency "
                            "in ms (e.g. latency<=5ms).")
        value *= dense["latency_ms"]  # a ratio of dense
    else:
        value *= units[unit]
    if not math.isfinite(value):
        raise UserError(f"--pick {text!r}: the {key} bound is too large to be a finite number.")
    series = table[_COLUMN[key]]
    return {"<=": series <= value, "<": series < value, ">=": series >= value, ">": series > value}[op]
