"""The journal: ``trials.jsonl``, one finished trial per line, appended as it finishes.

Each line is written whole, flushed and fsynced before the run goes on, so a killed run
loses at most the trials that were still being evaluated.

Reading never writes. Every line is checked to be a trial record when read. What a
reader tolerates and what only the run's owner may repair:

- a *torn last line* (no newline at its end: the process died while appending it, or
  it is being appended right now) is left out by every reader; only the writer that
  holds the run's lock (:mod:`autoprune.store.lock`) cuts it away, keeping its bytes in
  ``trials.torn`` (its trial is evaluated again, as any unfinished one);
- a *damaged line* anywhere else (not JSON, not a trial record, a trial id seen before)
  is named with its line number: readers skip it with a warning, and the writer refuses
  to resume until the user has decided what to do with it. Nothing is silently dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.errors import UserError
from autoprune.searchers.base import KINDS, TRIAL, Result

logger = logging.getLogger(__name__)
JOURNAL_NAME = "trials.jsonl"
#: where the writer keeps the bytes of a torn last line it cut away
TORN_NAME = "trials.torn"
STATUSES = ("ok", "failed")


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
    if result.kind != TRIAL:  # trial records stay as they were before measurements existed
        record["kind"] = result.kind
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
        kind=str(record.get("kind", TRIAL)),
    )


#: the metrics a front may rank by (autoprune.store.quality); an ok trial has one of them
QUALITY_METRICS = ("accuracy", "perplexity")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _whole(value: Any, *, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def record_problem(record: Any) -> str | None:
    """Why ``record`` (a parsed journal line) is not a trial record, or None when it is one."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not a trial record"
    missing = [key for key in ("trial_id", "levels", "fidelity", "status") if key not in record]
    if missing:
        return f"it is not a trial record (no {', '.join(missing)})"
    if not _whole(record["trial_id"]):
        return f"its trial_id {record['trial_id']!r} is not a whole number >= 0"
    levels = record["levels"]
    if not isinstance(levels, list) or not all(_whole(v) for v in levels):
        return "its levels are not a list of whole numbers"
    if not _whole(record["fidelity"]):
        return f"its fidelity {record['fidelity']!r} is not a whole number >= 0"
    if record["status"] not in STATUSES:
        return f"its status {record['status']!r} is neither ok nor failed"
    metrics = record.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        return "its metrics are not a mapping"
    if record["status"] == "ok" and not any(_number((metrics or {}).get(key)) for key in QUALITY_METRICS):
        return "it is an ok trial without a numeric accuracy or perplexity"
    for key in ("eval_samples", "parent"):
        if record.get(key) is not None and not _whole(record[key]):
            return f"its {key} {record[key]!r} is not a whole number"
    if record.get("kind", TRIAL) not in KINDS:
        return f"its kind {record['kind']!r} is not one of {', '.join(KINDS)}"
    if "draw" in record and not _whole(record["draw"]):
        return f"its draw {record['draw']!r} is not a whole number >= 0"
    return None


@dataclass(frozen=True)
class Damage:
    """A complete line of the journal that cannot be used, and why."""

    line: int  # 1-based
    reason: str


@dataclass
class Scan:
    """What one read of ``trials.jsonl`` found."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    damaged: list[Damage] = field(default_factory=list)
    #: byte offset and length of a torn last line, None when the file ends with a newline
    torn: tuple[int, int] | None = None
    lines: int = 0


def scan(path: Path) -> Scan:
    """Read and check every line of the journal at ``path``; never writes."""
    found = Scan()
    if not path.exists():
        return found
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                found.torn = (offset, len(raw))
                break
            found.lines = number
            offset += len(raw)
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                found.damaged.append(Damage(number, "it is not valid JSON"))
                continue
            problem = record_problem(record)
            if problem is None and record["trial_id"] in found.records:
                problem = f"trial {record['trial_id']} appears on an earlier line too"
            if problem is not None:
                found.damaged.append(Damage(number, problem))
                continue
            found.records[record["trial_id"]] = record
    return found


def damage_sentence(path: Path, damaged: list[Damage]) -> str:
    """One sentence naming the damaged lines and what to do."""
    first = damaged[0]
    more = f" (and {len(damaged) - 1} more damaged line{'s' if len(damaged) > 2 else ''}: " \
           f"{', '.join(str(d.line) for d in damaged[1:6])}{', ...' if len(damaged) > 6 else ''})" if damaged[1:] else ""
    return (f"line {first.line} of {str(path)!r} is damaged ({first.reason}){more}, so the run is not resumed: "
            f"keep a copy of the file, then delete or repair that line (its trial is evaluated again when "
            f"deleted) and resume again.")


def _write(fd: int, data: bytes) -> int:
    """The one place the journal writes bytes (where the fault-injection tests cut in)."""
    return os.write(fd, data)


class Journal:
    """The finished trials of ``run_dir/trials.jsonl``.

    Read-only by default: it reads, checks and warns, and never changes the file.
    ``writable=True`` is for the process holding the run's lock: it refuses a damaged
    journal (:func:`damage_sentence`), cuts a torn last line, and may :meth:`append`."""

    def __init__(self, run_dir: Path, *, writable: bool = False) -> None:
        self.path = Path(run_dir) / JOURNAL_NAME
        self.writable = writable
        found = scan(self.path)
        self.records: dict[int, dict[str, Any]] = found.records
        self.damaged = found.damaged
        if writable:
            if found.damaged:
                raise UserError(damage_sentence(self.path, found.damaged))
            if found.torn is not None:
                self._cut_torn(*found.torn, line=found.lines + 1)
        elif found.damaged:
            for damage in found.damaged:
                logger.warning("line %d of %s is damaged (%s); it is left out here, and the run cannot be resumed "
                               "until it is deleted or repaired", damage.line, self.path, damage.reason)

    def _cut_torn(self, offset: int, length: int, *, line: int) -> None:
        """Keep the torn line's bytes in ``trials.torn``, then cut it from the journal."""
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            torn = handle.read(length)
        with open(self.path.parent / TORN_NAME, "ab") as keep:
            keep.write(torn + b"\n")
            keep.flush()
            os.fsync(keep.fileno())
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            os.fsync(handle.fileno())
        logger.warning("line %d of %s was torn (the run stopped while writing it): cut away, its %d bytes kept in "
                       "%s; that trial is evaluated again", line, self.path, length, TORN_NAME)

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished trial as a whole line, flushed and fsynced before returning."""
        if not self.writable:
            raise RuntimeError("this journal was opened for reading; only the run's owner appends")
        problem = record_problem(record)
        if problem is not None:
            raise RuntimeError(f"refusing to journal a record that is not a trial: {problem}")
        trial_id = int(record["trial_id"])
        if trial_id in self.records:
            raise RuntimeError(f"trial {trial_id} is already in the journal")
        line = (json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):  # one write in practice; a short write continues it
                    written += _write(fd, line[written:])
                os.fsync(fd)
            except OSError:
                # a full disk (or another write error) mid-line: take the partial line back, so
                # the journal keeps only whole trials and a resume evaluates this one again
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    logger.warning("could not take back a partly written line of %s; the next resume cuts it",
                                   self.path)
                raise
        finally:
            os.close(fd)
        self.records[trial_id] = record

    def __contains__(self, trial_id: int) -> bool:
        return trial_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def result(self, trial_id: int) -> Result:
        return record_to_result(self.records[trial_id])
