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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from autoprune.errors import UserError
from autoprune.evaluation.checkpoints import CheckpointStore
from autoprune.executors.base import Executor, Job
from autoprune.interrupts import deferred
from autoprune.searchers.base import TRIAL, Proposal, Result, Searcher
from autoprune.store.journal import Journal, result_to_record

logger = logging.getLogger(__name__)

#: consecutive asks with nothing new to evaluate before the space counts as exhausted
MAX_IDLE_ASKS = 50

TrialKey = tuple[tuple[int, ...], int, "int | None", "int | None", int, str]


@dataclass
class LoopStats:
    evaluated: int = 0
    replayed: int = 0
    failed: int = 0
    stopped_by: str = ""


def _key(proposal: Proposal, default_fidelity: int) -> TrialKey:
    """Same levels, fidelity, scoring data, parent, draw and kind is the same trial."""
    fidelity = default_fidelity if proposal.fidelity is None else proposal.fidelity
    return (tuple(int(v) for v in proposal.levels), int(fidelity), proposal.eval_samples, proposal.parent,
            proposal.draw, proposal.kind)


def _same(record: Result, key: TrialKey) -> bool:
    return (tuple(record.levels.tolist()), record.fidelity, record.eval_samples, record.parent, record.draw,
            record.kind) == key


def draw_seed(seed: int, draw: int) -> int:
    """The training seed of ``draw``: the run's seed for draw 0, else one derived from both
    (so draw 1 of seed 0 is not the same randomness as draw 0 of seed 1)."""
    if draw == 0:
        return seed
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def run_loop(
    *,
    searcher: Searcher,
    executor: Executor,
    journal: Journal,
    trials: int,
    default_fidelity: int,
    seed: int,
    time_limit: float | None = None,
    checkpoints: CheckpointStore | None = None,
    on_result: Callable[[Result], None] | None = None,
    progress: bool = True,
    stats: LoopStats | None = None,
) -> LoopStats:
    """Drive ``searcher`` until ``trials`` distinct trials exist, time runs out, or it finishes.

    Measurements (proposals of kind ``measurement``) are journaled and told like trials but
    do not count against ``trials``: the searcher bounds them itself.

    ``stats`` is filled as the loop goes, so a caller still has them when it is interrupted."""
    if searcher.keeps_checkpoints and checkpoints is None:
        raise ValueError(f"searcher {searcher.name!r} continues training and needs a checkpoint store")
    stats = LoopStats() if stats is None else stats
    started = time.monotonic()
    seen: dict[TrialKey, Result | None] = {}
    next_id = 0
    candidates = 0  # trial ids handed to proposals of kind TRIAL
    idle = 0
    told_ids: set[int] = set()  # trials the searcher has heard of, this session (replayed or evaluated)
    bar = tqdm(total=trials, desc="search", unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        while candidates < trials:
            out_of_time = time_limit is not None and time.monotonic() - started >= time_limit
            if out_of_time and next_id >= len(journal):
                stats.stopped_by = "time limit"
                break
            # always a full batch, also near the end: what a searcher proposes must not depend
            # on the trial budget, or a run resumed with more trials would diverge from its journal
            proposals = searcher.ask(searcher.batch_size)
            if not proposals:
                stats.stopped_by = "searcher finished"
                break
            order: list[tuple[int, TrialKey]] = []
            jobs: list[Job] = []
            told: dict[int, Result] = {}
            kinds: dict[int, str] = {}
            for proposal in proposals:
                key = _key(proposal, default_fidelity)
                if key in seen:  # never evaluate the same candidate twice
                    order.append((-1, key))
                    continue
                if proposal.kind == TRIAL and candidates >= trials:
                    break  # over the trial budget: neither evaluated nor told
                trial_id = next_id
                next_id += 1
                candidates += proposal.kind == TRIAL
                kinds[trial_id] = proposal.kind
                order.append((trial_id, key))
                seen[key] = None
                if trial_id in journal:
                    result = journal.result(trial_id)
                    if not _same(result, key):
                        raise UserError(
                            f"the run cannot be resumed: trial {trial_id} in its journal differs from what the "
                            "searcher proposes now (another autoprune version, searcher, search space or latency "
                            "model made it); start a new run."
                        )
                    told[trial_id] = result
                    stats.replayed += 1
                    bar.update(int(proposal.kind == TRIAL))
                else:
                    parent_levels = None if proposal.parent is None else journal.result(proposal.parent).levels
                    jobs.append(_job(trial_id, key, seed, searcher.keeps_checkpoints, checkpoints, parent_levels))
            results = executor.run(jobs)
            for done, result in enumerate(results, start=1):
                result.kind = kinds[result.trial_id]  # the executors echo the job; the loop knows the kind
                if result.parent is not None and result.ok:
                    parent_steps = journal.records[result.parent]["metrics"].get("total_steps", 0)
                    result.metrics["total_steps"] = parent_steps + result.metrics["steps"]
                elif result.ok:
                    result.metrics["total_steps"] = result.metrics["steps"]
                with deferred():  # a stop (Ctrl-C, SIGTERM) waits until the trial is journaled whole
                    if result.state is not None and checkpoints is not None:
                        checkpoints.save(result.trial_id, result.state)  # before the journal: a journaled
                    result.state = None                                  # trial's weights always exist
                    journal.append(result_to_record(result, {"finished_at": time.time()}))
                    told[result.trial_id] = result
                    stats.evaluated += 1
                    stats.failed += not result.ok
                bar.update(int(result.kind == TRIAL))
                if result.ok:
                    quality = ({"acc": f"{result.metrics['accuracy']:.4f}"} if "accuracy" in result.metrics
                               else {"ppl": f"{result.metrics.get('perplexity', float('nan')):.3f}"})
                    bar.set_postfix(**quality, flops=f"{result.metrics['flops_ratio']:.3f}")
                if on_result is not None:
                    on_result(result)
                if done < len(jobs) and time_limit is not None and time.monotonic() - started >= time_limit:
                    # stop mid-batch: the rest is neither evaluated nor told; a resume replays the
                    # journaled part of the batch and evaluates the rest, as after a kill
                    close = getattr(results, "close", None)  # a generator: let it tidy up (Ray: drop the rest)
                    if close is not None:
                        close()
                    stats.stopped_by = "time limit"
                    return stats
            batch: list[Result] = []
            for trial_id, key in order:
                if trial_id >= 0:
                    seen[key] = told[trial_id]
                batch.append(seen[key])  # type: ignore[arg-type]
            searcher.tell(batch)
            told_ids.update(trial_id for trial_id, _ in order if trial_id >= 0)
            if checkpoints is not None and searcher.keeps_checkpoints:
                live = searcher.live_checkpoints()
                if live is not None:
                    checkpoints.drop(told_ids, live)
            idle = 0 if any(trial_id >= 0 for trial_id, _ in order) else idle + 1
            if idle >= MAX_IDLE_ASKS:
                stats.stopped_by = "searcher proposes only candidates already evaluated"
                break
        else:
            stats.stopped_by = "trial budget"
    finally:
        bar.close()
    return stats


def _job(trial_id: int, key: TrialKey, seed: int, keep_state: bool, checkpoints: CheckpointStore | None,
         parent_levels: np.ndarray | None = None) -> Job:
    """The job of a new trial; one that continues a parent carries the parent's weights and
    levels (a searcher may continue a parent at deeper levels: its weights are narrowed)."""
    levels, fidelity, eval_samples, parent, draw, kind = key
    init_state = None
    if parent is not None:
        init_state = checkpoints.load(parent) if checkpoints is not None else None
        if init_state is None:
            raise RuntimeError(f"trial {trial_id} continues trial {parent}, whose weights were not kept")
    return Job(trial_id=trial_id, levels=np.array(levels, dtype=np.int64), fidelity=fidelity,
               seed=draw_seed(seed, draw), eval_samples=eval_samples, parent=parent, draw=draw,
               init_state=init_state, init_levels=None if parent_levels is None else np.asarray(parent_levels),
               keep_state=keep_state, kind=kind)
