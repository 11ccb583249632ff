"""The run's front kept current as trials are journaled, in time that does not grow with the run.

A search rewrites ``front.csv`` after every trial. Recomputing the front from the whole
journal each time made a run quadratic in its trials. :class:`FrontKeeper` holds, per
stage, the rows of the trials that may be on the front, and the current front, and
updates it from each new trial with :func:`~autoprune.store.front.pareto_front` itself (one
definition of the front), applied to the fewest rows that give the same answer:

- a trial that is failed, over budget, or of an earlier stage than the front's changes
  nothing;
- a new candidate of the front's stage competes with the current front only (a member
  dominated before stays dominated); one a member dominates leaves front and file as they are;
- a candidate scored again (another draw) moves its mean, which can free candidates it
  dominated: its stage's rows are ranked again;
- a trial of a later stage starts that stage's front from its rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoprune.searchers.base import TRIAL
from autoprune.space.latency_model import LatencyModel
from autoprune.store.front import pareto_front, trials_table
from autoprune.store.run_dir import write_front

logger = logging.getLogger(__name__)

StageKey = tuple[int, float]


class FrontKeeper:
    """The front of the trials seen so far (``front``), written to ``path/front.csv`` by :meth:`add`."""

    def __init__(self, *, path: Path, group_names: list[str], limits: dict[str, float],
                 latency_model: LatencyModel | None, objectives: tuple[tuple[str, str], ...],
                 records: Iterable[dict[str, Any]] = ()) -> None:
        self.path = path
        self._group_names = list(group_names)
        self._limits = dict(limits)
        self._latency_model = latency_model
        self._objectives = objectives
        #: eligible rows (ok, within budget) per stage, and per candidate within a stage
        self._stages: dict[StageKey, dict[tuple[int, ...], list[dict[str, Any]]]] = {}
        self._top: StageKey | None = None
        self._changed_stage = False
        self._matrix: tuple[list[str], np.ndarray, np.ndarray] | None = None
        self.front = pd.DataFrame()
        rows = self._rows(list(records))
        for row in rows:
            self._file(row)
        if self._top is not None:
            self.front = self._rank(self._stage_rows(self._top))

    def add(self, record: dict[str, Any]) -> pd.DataFrame:
        """Take one journaled trial into the front and rewrite ``front.csv``; returns the front."""
        for row in self._rows([record]):
            stage, identity, scored_before = self._file(row)
            if stage is None or stage != self._top:
                continue  # not eligible, or of an earlier stage than the front's
            if self.front.empty or scored_before or self._changed_stage:
                self.front = self._rank(self._stage_rows(stage))
            elif self._dominated(row):
                continue  # the front stays as it is, and so does front.csv
            else:
                members = [r for key in self._member_keys() for r in self._stages[stage].get(key, [])]
                self.front = self._rank(members + [row])
            write_front(self.path, self.front)
        return self.front

    def _dominated(self, row: dict[str, Any]) -> bool:
        """Whether a front member beats a new candidate's ``row`` in every objective (at least as
        good, better in one); only when the front and the row measure the same objectives, so
        the answer is the one :func:`pareto_front` would give."""
        if self._matrix is None:  # the front's objectives, minimised; kept until the front changes
            columns = [c for c, _ in self._objectives if c in self.front]
            signs = np.array([-1.0 if d == "max" else 1.0 for c, d in self._objectives if c in self.front])
            self._matrix = (columns, signs, self.front[columns].to_numpy(dtype=float) * signs)
        columns, signs, theirs = self._matrix
        mine = np.array([row.get(c, np.nan) for c in columns], dtype=float) * signs
        measured = ~np.isnan(mine)
        if not (np.isnan(theirs) == ~measured).all():
            return False
        theirs, mine = theirs[:, measured], mine[measured]
        return bool(((theirs <= mine).all(axis=1) & (theirs < mine).any(axis=1)).any())

    def _rows(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table = trials_table(records, self._group_names, self._limits, self._latency_model)
        columns = list(table.columns)
        return [dict(zip(columns, values)) for values in table.to_numpy(dtype=object)]

    def _file(self, row: dict[str, Any]) -> tuple[StageKey | None, tuple[int, ...], bool]:
        """File an eligible row under its stage and candidate; move the top stage if it is later."""
        self._changed_stage = False
        identity = (int(row["fidelity"]), *(int(row[f"level:{name}"]) for name in self._group_names))
        if not row["within_budget"] or row.get("kind", TRIAL) != TRIAL:  # a searcher's probes never compete
            return None, identity, False
        samples = row["eval_samples"]
        stage = (int(row["fidelity"]), math.inf if samples is None or pd.isna(samples) else float(samples))
        candidates = self._stages.setdefault(stage, {})
        scored_before = identity in candidates
        candidates.setdefault(identity, []).append(row)
        if self._top is None or stage > self._top:
            self._top = stage
            self._changed_stage = True
        return stage, identity, scored_before

    def _stage_rows(self, stage: StageKey) -> list[dict[str, Any]]:
        return [row for rows in self._stages[stage].values() for row in rows]

    def _member_keys(self) -> list[tuple[int, ...]]:
        names = [f"level:{name}" for name in self._group_names]
        return [(int(fidelity), *(int(v) for v in levels))
                for fidelity, levels in zip(self.front["fidelity"], self.front[names].to_numpy())]

    def _rank(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        self._matrix = None
        table = pd.DataFrame(rows)
        if table.empty:
            return table
        return pareto_front(table.sort_values("trial_id", kind="stable").reset_index(drop=True), self._objectives)
