"""How a run is doing, while it runs or after: ``autoprune status RUN``.

Read without a lock from what the writer keeps current: ``trials.jsonl`` (each trial
with the time it finished) and ``run.json`` (an open session's entry says where it runs:
host, pid, executor and workers; a closed one how it ended). So it works from any machine
that sees the run directory, e.g. a laptop watching a Ray cluster job on shared storage;
whether the writing process is still alive can be checked only on its own host.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from autoprune.views.snapshot import Snapshot, take

logger = logging.getLogger(__name__)

#: the rate is measured over at most this many of the last finished trials
RATE_WINDOW = 50


@dataclass(frozen=True)
class Status:
    """What ``status`` reports about one run, read at ``now``."""

    snap: Snapshot
    now: float
    session: dict[str, Any] | None  # the last session's entry in run.json
    alive: bool | None  # the open session's process lives (None: on another host, or no open session)

    @property
    def running(self) -> bool:
        return bool(self.session and self.session.get("running")) and self.alive is not False

    def rate(self) -> float | None:
        """Trials per second over the last :data:`RATE_WINDOW` finished trials (of this session, while one runs)."""
        finished = self.snap.trials["finished_at"].dropna().sort_values().to_numpy(dtype=float) \
            if not self.snap.trials.empty else np.array([])
        if self.running:
            finished = finished[finished >= float(self.session["started"])]
        finished = finished[-RATE_WINDOW:]
        if len(finished) >= 2 and finished[-1] > finished[0]:
            return (len(finished) - 1) / (finished[-1] - finished[0])
        if len(finished) == 1 and self.running and finished[0] > self.session["started"]:
            return 1.0 / (finished[0] - float(self.session["started"]))
        return None

    def seconds_left(self) -> float | None:
        """Until the trial budget or the session's time limit ends it, whichever comes first."""
        if not self.running:
            return None
        config = self.snap.run.config
        estimates = []
        rate = self.rate()
        if rate:
            estimates.append(max(0, config.trials - len(self.snap.trials)) / rate)
        if config.time_limit is not None:
            estimates.append(max(0.0, config.time_limit - (self.now - float(self.session["started"]))))
        return min(estimates) if estimates else None

    def describe(self) -> str:
        """The status as a few lines of text."""
        snap, config = self.snap, self.snap.run.config
        trials = snap.trials
        lines = [f"run: {snap.path} ({snap.searcher}, budget {', '.join(config.budget)})", self._state()]
        if trials.empty:
            lines.append(f"trials: none finished yet of {config.trials}")
            return "\n".join(lines)
        failed = int((trials["status"] != "ok").sum())
        last = trials["finished_at"].max()
        ago = f"; the last finished {_duration(self.now - last)} ago" if np.isfinite(last) else ""
        lines.append(f"trials: {len(trials)} of {config.trials} done ({failed} failed){ago}")
        rate = self.rate()
        if rate:
            left = self.seconds_left()
            eta = f"; about {_duration(left)} left" if left is not None else ""
            lines.append(f"rate: {rate * 60:.3g} trials/min over the last {min(len(trials), RATE_WINDOW)}{eta}")
        quality = snap.quality
        if snap.front.empty:
            lines.append("front: empty (no successful trial within budget yet)")
        else:
            best = snap.front.iloc[0]
            lines.append(f"best so far: {quality.label} {quality.format(best[quality.metric])} (trial "
                         f"{int(best['trial_id'])}) at {best['flops_ratio']:.3f} of the dense FLOPs; front: "
                         f"{len(snap.front)} models, hypervolume {snap.hypervolume:.4f}")
        chosen = snap.run.record.incumbent
        if chosen is not None and not self.running:
            lines.append(f"the searcher's choice: trial {chosen}")
        return "\n".join(lines)

    def _state(self) -> str:
        sessions = self.snap.run.record.sessions
        session = self.session
        if session is None:
            return "state: no session has started yet"
        number = len(sessions)
        since = datetime.fromtimestamp(float(session["started"]), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if session.get("running"):
            where = (f"{session.get('executor', '?')} executor with {session.get('worker_count', '?')} worker"
                     f"{'' if session.get('worker_count') == 1 else 's'}, pid {session.get('pid', '?')} on host "
                     f"{session.get('host', '?')}")
            if self.alive is False:
                return (f"state: stopped without closing its session {number} (started {since}; the process, {where}, "
                        "is gone: killed or crashed); resume with: autoprune search --resume " + self.snap.path)
            check = "" if self.alive else " (on another host: whether it still runs cannot be checked from here)"
            return (f"state: running: session {number} since {since} "
                    f"({_duration(self.now - float(session['started']))}), {where}{check}")
        workers = session.get("workers") or {}
        used = ""
        if isinstance(workers, dict) and workers:
            used = (f", {workers.get('workers')} {workers.get('executor')} workers busy "
                    f"{float(workers.get('utilisation', 0)):.0%} of the time")
        return (f"state: not running; {number} session{'' if number == 1 else 's'}, the last started {since}, "
                f"ran {_duration(float(session.get('seconds', 0)))}, ended by: {session.get('stopped_by') or '?'}"
                f"{used}")


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _alive(session: dict[str, Any] | None) -> bool | None:
    """Whether the open session's process lives: checked on its own host only."""
    if not session or not session.get("running"):
        return None
    if session.get("host") != socket.gethostname() or not isinstance(session.get("pid"), int):
        return None
    try:
        os.kill(session["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_status(run_dir: Any) -> Status:
    """The status of the run at ``run_dir`` (a run without trials yet is fine)."""
    snap = take(run_dir, need_trials=False)
    sessions = [s for s in snap.run.record.sessions if isinstance(s, dict)]
    session = sessions[-1] if sessions else None
    return Status(snap=snap, now=time.time(), session=session, alive=_alive(session))
