"""The run record: what ``run.json`` holds, as one typed object read, written and versioned here.

Every other module reads a run through :class:`RunRecord` fields rather than raw JSON
keys, so a new field (a tokenizer, a task metric) changes this file and the code that
uses it, and nothing else. The raw file is checked section by section on reading
(:func:`autoprune.store.run_dir.read_run`); keys this version does not know are kept as
read and written back unchanged (``extra``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from autoprune.store.lock import RunLock
from autoprune.store.quality import ACCURACY, Quality, quality_of
from autoprune.store.run_dir import FORMAT_VERSION, create_run, read_run, section_error, update_run

logger = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One run's configuration and context (``run.json``, format :data:`FORMAT_VERSION`).

    ``config`` is the :class:`~autoprune.config.SearchConfig` as a mapping, ``space`` and
    ``latency_model`` the search space and latency model as their ``to_dict`` forms (the
    store imports neither); ``sessions`` one entry per session (an open one says
    ``running``, host, pid, executor, ``worker_count``; a closed one what it did)."""

    config: dict[str, Any]
    space: dict[str, Any]
    limits: dict[str, float]
    dense: dict[str, float]
    quality: Quality = ACCURACY
    created_at: str | None = None
    searcher: dict[str, Any] = field(default_factory=dict)
    evaluator: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    data_fingerprint: str | None = None
    model_spec: dict[str, Any] | None = None
    never_prune: list[str] = field(default_factory=list)
    dense_latency: dict[str, Any] | None = None
    latency_model: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    incumbent: int | None = None
    #: what the searcher learnt that a user should see (``Searcher.report``, e.g. dp's additivity check)
    searcher_report: dict[str, Any] | None = None
    #: keys of run.json this version does not know, kept as read
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "RunRecord":
        """The record of the run at ``path``, or one sentence saying why it cannot be read."""
        data = read_run(path)
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {key: data[key] for key in known if data.get(key) is not None}
        for section in ("quality", "limits", "dense"):
            try:
                if section == "quality":
                    values["quality"] = quality_of(data)
                else:
                    values[section] = {str(k): _number(v) for k, v in data[section].items()}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise section_error(Path(path), section, exc) from None
        extra = {key: value for key, value in data.items() if key not in known and key != "format_version"}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The record as run.json holds it (``quality`` as a mapping, unknown keys as read)."""
        data: dict[str, Any] = {"format_version": FORMAT_VERSION}
        for item in fields(self):
            if item.name == "extra":
                continue
            value = getattr(self, item.name)
            data[item.name] = value.to_dict() if isinstance(value, Quality) else value
        data.update(self.extra)
        return data

    def create(self, path: Path) -> RunLock:
        """Make the run directory with this record (refused if it holds a run); returns its held lock."""
        info = self.to_dict()
        info.pop("format_version")
        return create_run(path, info)

    def write(self, path: Path) -> None:
        """Replace ``path/run.json`` with this record, atomically."""
        update_run(path, self.to_dict())


def _number(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return value
