"""The search loop: ask, evaluate, journal, tell, until the trial or time budget is spent.

Resuming is replay. Searchers are deterministic given their seed and what they were told,
so a resumed run re-creates the searcher, asks again, and answers every proposal the
journal already holds from the journal; only the rest is evaluated. Trial ids are handed
out in ask order, so the replay meets the same ids, and a proposal that differs from the
journaled one (a changed searcher) is refused rather than silently mixed in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from autoprune.executors.base import Executor, Job
from autoprune.searchers.base import Proposal, Result, Searcher
from autoprune.store.journal import Journal, result_to_record

logger = logging.getLogger(__name__)

#: consecutive asks with nothing new to evaluate before the space counts as exhausted
MAX_IDLE_ASKS = 50


@dataclass
class LoopStats:
    evaluated: int = 0
    replayed: int = 0
    failed: int = 0
    stopped_by: str = ""


def _key(proposal: Proposal, default_fidelity: int) -> tuple[tuple[int, ...], int]:
    """Same levels at the same fidelity is the same trial."""
    fidelity = default_fidelity if proposal.fidelity is None else proposal.fidelity
    return tuple(int(v) for v in proposal.levels), int(fidelity)


def run_loop(
    *,
    searcher: Searcher,
    executor: Executor,
    journal: Journal,
    trials: int,
    default_fidelity: int,
    seed: int,
    time_limit: float | None = None,
    on_result: Any = None,
    progress: bool = True,
) -> LoopStats:
    """Drive ``searcher`` until ``trials`` distinct trials exist, time runs out, or it finishes."""
    stats = LoopStats()
    started = time.monotonic()
    seen: dict[tuple, Result] = {}
    next_id = 0
    idle = 0
    bar = tqdm(total=trials, desc="search", unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        while next_id < trials:
            if time_limit is not None and time.monotonic() - started >= time_limit and next_id >= len(journal):
                stats.stopped_by = "time limit"
                break
            # always a full batch, also near the end: what a searcher proposes must not depend
            # on the trial budget, or a run resumed with more trials would diverge from its journal
            proposals = searcher.ask(searcher.batch_size)
            if not proposals:
                stats.stopped_by = "searcher finished"
                break
            told: dict[int, Result] = {}
            jobs: list[Job] = []
            order: list[tuple[int, Proposal]] = []
            for proposal in proposals:
                key = _key(proposal, default_fidelity)
                fidelity = key[1]
                if key in seen:  # never evaluate the same candidate twice
                    order.append((-1, proposal))
                    continue
                if next_id >= trials:
                    break  # over the trial budget: neither evaluated nor told
                trial_id = next_id
                next_id += 1
                order.append((trial_id, proposal))
                if trial_id in journal:
                    result = journal.result(trial_id)
                    if tuple(result.levels.tolist()) != key[0] or result.fidelity != fidelity:
                        raise RuntimeError(
                            f"trial {trial_id} in the journal differs from what the searcher proposes now; "
                            "the run cannot be resumed with a changed searcher or search space"
                        )
                    told[trial_id] = result
                    stats.replayed += 1
                    bar.update(1)
                else:
                    jobs.append(Job(trial_id=trial_id, levels=np.asarray(proposal.levels), fidelity=fidelity,
                                    seed=seed))
                seen[key] = None  # type: ignore[assignment]
            for result in executor.run(jobs):
                journal.append(result_to_record(result, {"finished_at": time.time()}))
                told[result.trial_id] = result
                stats.evaluated += 1
                stats.failed += not result.ok
                bar.update(1)
                if result.ok:
                    bar.set_postfix(acc=f"{result.metrics['accuracy']:.4f}",
                                    flops=f"{result.metrics['flops_ratio']:.3f}")
                if on_result is not None:
                    on_result(result)
            batch: list[Result] = []
            for trial_id, proposal in order:
                if trial_id >= 0:
                    seen[_key(proposal, default_fidelity)] = told[trial_id]
                batch.append(seen[_key(proposal, default_fidelity)])
            searcher.tell(batch)
            idle = idle + 1 if not any(tid >= 0 for tid, _ in order) else 0
            if idle >= MAX_IDLE_ASKS:
                stats.stopped_by = "searcher proposes only candidates already evaluated"
                break
        else:
            stats.stopped_by = "trial budget"
    finally:
        bar.close()
    return stats
