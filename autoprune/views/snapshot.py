"""One read of a run, shaped for looking at it: trials, front, stage of each trial, progress.

A :class:`Snapshot` reads the journal once and derives everything the plots, the report,
``compare`` and ``status`` show, so they agree with each other and with ``autoprune front``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autoprune.errors import UserError
from autoprune.store.front import hypervolume, last_stage, objectives_for, pareto_front
from autoprune.store.quality import Quality

logger = logging.getLogger(__name__)

#: at most this many points on a progress curve (each is one front computation)
PROGRESS_POINTS = 60


@dataclass(frozen=True)
class Snapshot:
    """A run as read at one moment: ``trials`` (with ``flops_ratio`` priced for failed
    trials too, ``stage``: ``last`` or ``early``), its ``front`` and what describes it."""

    path: str
    name: str
    run: Any  # autoprune.api.Run
    trials: pd.DataFrame
    front: pd.DataFrame

    @property
    def quality(self) -> Quality:
        return self.run.quality

    @property
    def dense(self) -> dict[str, float]:
        return self.run.dense

    @property
    def limits(self) -> dict[str, float]:
        return self.run.limits

    @property
    def searcher(self) -> str:
        return str(self.run.config.searcher)

    @property
    def model_name(self) -> str:
        spec = self.run.record.model_spec or {}
        return str(spec.get("name") or self.run.config.model)

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.front, self.dense, self.quality)

    def budget_ratio(self, resource: str) -> float | None:
        """A budget on ``resource`` as a ratio of the dense model, None without one."""
        limit = self.limits.get(resource)
        dense = self.dense.get(resource)
        return None if limit is None or not dense else limit / dense

    def progress(self) -> pd.DataFrame:
        """The front as it stood after trial ``n`` of the journal (in finishing order), at up to
        :data:`PROGRESS_POINTS` points: ``trials``, ``seconds`` since the first trial started,
        ``best`` (the front's best quality) and ``hypervolume``."""
        return progress(self.trials, self.dense, self.quality)


def take(path: Any, *, need_trials: bool = True) -> Snapshot:
    """Read the run at ``path``; with ``need_trials`` a run without trials is refused in one sentence."""
    from autoprune.api import open_run

    run = open_run(path)
    trials = run.trials
    if need_trials and trials.empty:
        raise UserError(f"{str(run.path)!r} has no trials yet; wait for its first trials to finish, "
                        f"or see how it is doing with `autoprune status {run.path}`.")
    if not trials.empty:
        trials = _with_stage(trials)
        trials = _priced(trials, run)
    front = pareto_front(trials, objectives_for(run.quality)) if not trials.empty else trials
    return Snapshot(path=str(run.path), name=run.path.name or str(run.path), run=run, trials=trials, front=front)


def _with_stage(trials: pd.DataFrame) -> pd.DataFrame:
    """``stage``: ``last`` for the trials that compete for the front, ``early`` for a staged
    searcher's cheaper early stages (:func:`autoprune.store.front.last_stage`)."""
    trials = trials.copy()
    trials["stage"] = np.where(trials.index.isin(last_stage(trials).index), "last", "early")
    return trials


def _priced(trials: pd.DataFrame, run: Any) -> pd.DataFrame:
    """Fill ``flops_ratio`` and ``params_ratio`` of trials without metrics (failed ones) from
    the run's exact cost model, so a failed trial can be shown where it lies."""
    levels = trials[[f"level:{name}" for name in run.space.group_names]].to_numpy(dtype=np.int64)
    for resource in ("flops", "params"):
        column = f"{resource}_ratio"
        missing = trials[column].isna().to_numpy()
        if missing.any():
            trials.loc[missing, column] = run.space.relative_cost(resource, levels[missing])
    return trials


def progress(trials: pd.DataFrame, dense: dict[str, float], quality: Quality) -> pd.DataFrame:
    """See :meth:`Snapshot.progress`."""
    if trials.empty:
        return pd.DataFrame(columns=["trials", "seconds", "best", "hypervolume"])
    ordered = trials.sort_values(["finished_at", "trial_id"], na_position="last", kind="stable")
    times = ordered["finished_at"].to_numpy(dtype=float)
    began = times - ordered["seconds"].fillna(0).to_numpy(dtype=float)  # when each trial started
    start = np.nanmin(began) if np.isfinite(times).any() else np.nan
    objectives = objectives_for(quality)
    rows = []
    for n in np.unique(np.linspace(1, len(ordered), min(PROGRESS_POINTS, len(ordered))).round().astype(int)):
        front = pareto_front(ordered.iloc[:n], objectives)
        best = np.nan
        if not front.empty:
            best = front[quality.metric].max() if quality.higher_is_better else front[quality.metric].min()
        rows.append({"trials": int(n), "seconds": float(times[n - 1] - start),
                     "best": float(best), "hypervolume": hypervolume(front, dense, quality)})
    return pd.DataFrame(rows)
