"""The journal: ``trials.jsonl``, one finished trial per line, appended as it finishes.

Each line is flushed and fsynced before the run goes on, so a killed run loses at most
the trials that were still being evaluated. A torn last line (the process died while
writing it) is ignored on reading and cut away before the journal is appended to again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.searchers.base import Result

logger = logging.getLogger(__name__)
JOURNAL_NAME = "trials.jsonl"


def result_to_record(result: Result, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record = {
        "trial_id": result.trial_id,
        "levels": [int(v) for v in result.levels],
        "fidelity": result.fidelity,
        "status": result.status,
        "metrics": result.metrics,
        "error": result.error,
        "eval_samples": result.eval_samples,
        "parent": result.parent,
        "draw": result.draw,
    }
    record.update(extra or {})
    return record


def record_to_result(record: dict[str, Any]) -> Result:
    return Result(
        trial_id=int(record["trial_id"]),
        levels=np.array(record["levels"], dtype=np.int64),
        fidelity=int(record["fidelity"]),
        status=str(record["status"]),
        metrics=dict(record.get("metrics") or {}),
        error=record.get("error"),
        eval_samples=record.get("eval_samples"),
        parent=record.get("parent"),
        draw=int(record.get("draw", 0)),  # journals written before draws existed have only draw 0
    )


class Journal:
    """Append-only record of finished trials in ``run_dir/trials.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / JOURNAL_NAME
        self.records: dict[int, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        good_bytes = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    logger.warning("ignoring a torn last line in %s", self.path)
                    break
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    logger.warning("ignoring an unreadable line in %s", self.path)
                    break
                self.records[int(record["trial_id"])] = record
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)

    def append(self, record: dict[str, Any]) -> None:
        trial_id = int(record["trial_id"])
        if trial_id in self.records:
            raise RuntimeError(f"trial {trial_id} is already in the journal")
        line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[trial_id] = record

    def __contains__(self, trial_id: int) -> bool:
        return trial_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def result(self, trial_id: int) -> Result:
        return record_to_result(self.records[trial_id])
