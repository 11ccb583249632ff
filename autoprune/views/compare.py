"""Several runs of one model on one data set, side by side: hypervolume, best quality, cost.

Hypervolume is computed for every run against one reference point: objectives normalised
by the *first* run's dense model (quality error as :meth:`Quality.error` defines it, FLOPs
and params as fractions of dense), reference point 1 in each. Measured latency is left out
of it, as runs may have been timed on different machines; a run's own summary
(``autoprune front``) includes it, so the two numbers differ where latency was measured.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from autoprune.errors import UserError
from autoprune.store.front import hypervolume
from autoprune.views.snapshot import Snapshot

logger = logging.getLogger(__name__)


def check_comparable(snaps: list[Snapshot]) -> None:
    """Refuse, in one sentence, runs that searched different models, data or quality metrics."""
    if len(snaps) < 2:
        raise UserError("compare needs at least two run directories, e.g. `autoprune compare RUN1 RUN2`.")
    first = snaps[0]
    for snap in snaps[1:]:
        for what, mine, theirs in (("model", first.run.record.model_spec, snap.run.record.model_spec),
                                   ("data", first.run.record.data_fingerprint, snap.run.record.data_fingerprint),
                                   ("quality metric", first.quality.metric, snap.quality.metric)):
            if mine != theirs:
                raise UserError(f"{snap.path!r} was searched on a different {what} than {first.path!r}; "
                                "compare only runs of one model on one data set.")
        if sum(s.path == snap.path for s in snaps) > 1:
            raise UserError(f"{snap.path!r} is named twice; name each run once.")


def search_seconds(snap: Snapshot) -> float:
    """Wall time the run's sessions spent, or, while its first session runs, the span of its trials."""
    sessions = [s for s in snap.run.record.sessions if isinstance(s, dict)]
    recorded = sum(float(s.get("seconds") or 0.0) for s in sessions)
    if recorded > 0:
        return recorded
    finished = snap.trials["finished_at"].astype(float)
    if finished.notna().any():
        return float(finished.max() - (finished - snap.trials["seconds"].fillna(0)).min())
    return float("nan")


def comparison_table(snaps: list[Snapshot]) -> pd.DataFrame:
    """One row per run: searcher, budget, trials, front size, hypervolume (one reference for all),
    the best quality within the run's budget and its FLOPs, search time."""
    check_comparable(snaps)
    reference = {k: v for k, v in snaps[0].dense.items() if k != "latency_ms"}
    rows: list[dict[str, Any]] = []
    for snap in snaps:
        quality = snap.quality
        front = snap.front
        best = None
        if not front.empty:
            best = front.sort_values(quality.metric, ascending=not quality.higher_is_better).iloc[0]
        ok = int((snap.trials["status"] == "ok").sum())
        seconds = search_seconds(snap)
        rows.append({
            "run": snap.name,
            "searcher": snap.searcher,
            "budget": ", ".join(snap.run.config.budget),
            "trials": len(snap.trials),
            "failed": len(snap.trials) - ok,
            "front": len(front),
            "hypervolume": hypervolume(front, reference, quality),
            f"best {quality.metric}": np.nan if best is None else float(best[quality.metric]),
            "its flops_ratio": np.nan if best is None else float(best["flops_ratio"]),
            "its trial": -1 if best is None else int(best["trial_id"]),
            "search minutes": seconds / 60.0,
        })
    return pd.DataFrame(rows)
