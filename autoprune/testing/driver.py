"""A tiny ask/tell loop over a synthetic objective, the run loop without model or journal.

The conformance suite needs to run a searcher the way :func:`autoprune.loop.run_loop`
does (ask a batch, evaluate it, tell every result back, failed ones included) but in
milliseconds, and to keep a transcript of what was proposed so two runs can be compared.
Failures are a deterministic function of the trial id, so two runs with the same seed
tell the searcher exactly the same results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from autoprune.searchers.base import Proposal, Result, Searcher
from autoprune.testing.synthetic import SeparableQuality

#: the fidelity (retraining steps) a proposal with ``fidelity=None`` is evaluated at
DEFAULT_FIDELITY = 100


@dataclass
class Transcript:
    """What one drive asked and told: every batch of proposals and every result."""

    batches: list[list[Proposal]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    finished: bool = False

    @property
    def proposals(self) -> list[Proposal]:
        return [p for batch in self.batches for p in batch]

    def levels(self) -> list[list[int]]:
        """Every proposal's levels as plain lists, in ask order (for equality checks)."""
        return [np.asarray(p.levels).tolist() for p in self.proposals]


def evaluate(
    proposals: list[Proposal], quality: SeparableQuality, *, first_trial_id: int, fail_every: int | None
) -> list[Result]:
    """Score proposals on ``quality``; trial ids ``k`` with ``(k + 1) % fail_every == 0`` fail.

    A failed result carries no metrics, as a NaN loss or an out-of-memory evaluation does.
    """
    if fail_every is not None and fail_every < 1:
        raise ValueError(f"fail_every must be a positive integer or None, got {fail_every!r}")
    space = quality.space
    results = []
    for offset, proposal in enumerate(proposals):
        trial_id = first_trial_id + offset
        levels = np.array(proposal.levels, dtype=np.int64)
        fidelity = DEFAULT_FIDELITY if proposal.fidelity is None else int(proposal.fidelity)
        echo = {"eval_samples": proposal.eval_samples, "parent": proposal.parent,  # as the executors do
                "draw": proposal.draw, "kind": proposal.kind}  # (the run loop sets the kind)
        if fail_every is not None and (trial_id + 1) % fail_every == 0:
            results.append(Result(trial_id=trial_id, levels=levels, fidelity=fidelity, status="failed",
                                  error="synthetic failure", **echo))
            continue
        accuracy = float(quality.accuracy(levels))
        metrics = {
            "accuracy": accuracy,
            "loss": 1.0 - accuracy,
            # the quality lost to pruning also stands in for the output distance to the dense
            # model, the training-free fitness of Týr-the-Pruner
            "kl_to_dense": 1.0 - accuracy,
            "mse_to_dense": 1.0 - accuracy,
            "worst_mse_to_dense": 1.0 - accuracy,
            **feature_distortions(quality, levels),
            "flops_ratio": float(space.relative_cost("flops", levels)),
            "params_ratio": float(space.relative_cost("params", levels)),
        }
        results.append(Result(trial_id=trial_id, levels=levels, fidelity=fidelity, status="ok", metrics=metrics,
                              **echo))
    return results


def feature_distortions(quality: SeparableQuality, levels: np.ndarray) -> dict[str, float]:
    """The synthetic stand-in for the evaluator's ``feature_distortion:<boundary>`` metrics:
    at a boundary named after group ``g`` (:func:`~autoprune.testing.synthetic.stages_in_order`),
    the quality lost by the groups up to and including ``g``, relative to dense; at the
    output, all of it. A candidate pruned only inside one stage then loses at that stage's
    boundary exactly what its groups lose, as a real stage fed the dense features does."""
    lost = (quality.table[:, 0] - quality.table[np.arange(quality.space.n_groups), levels]) / quality.dense_value
    upstream = np.cumsum(lost)
    metrics = {f"feature_distortion:{group.name}": float(upstream[g]) for g, group in enumerate(quality.space.groups)}
    metrics["feature_distortion:output"] = float(upstream[-1])
    return metrics


def drive(
    searcher: Searcher,
    quality: SeparableQuality,
    *,
    max_proposals: int,
    batch_size: int | None = None,
    fail_every: int | None = None,
) -> Transcript:
    """Ask, evaluate and tell until the searcher stops proposing or ``max_proposals`` is spent.

    ``batch_size`` defaults to the searcher's own, as the run loop asks; the last ask is
    cut to what is left of ``max_proposals``, as the run loop cuts to its trial budget.
    """
    if max_proposals < 1:
        raise ValueError(f"max_proposals must be a positive integer, got {max_proposals!r}")
    size = searcher.batch_size if batch_size is None else batch_size
    transcript = Transcript()
    n_proposed = 0
    while n_proposed < max_proposals:
        proposals = searcher.ask(min(size, max_proposals - n_proposed))
        if not proposals:
            transcript.finished = True
            break
        transcript.batches.append(list(proposals))
        results = evaluate(proposals, quality, first_trial_id=n_proposed, fail_every=fail_every)
        n_proposed += len(proposals)
        transcript.results.extend(results)
        searcher.tell(results)
    return transcript


class SyntheticExecutor:
    """An executor for :func:`autoprune.loop.run_loop` that scores jobs on a synthetic
    quality, so a test drives the real loop (journal, replay, resume) in milliseconds; it
    stops the run as a kill would (``KeyboardInterrupt``) once ``stop_after`` jobs ran."""

    def __init__(self, quality: SeparableQuality, stop_after: int | None = None) -> None:
        self.quality = quality
        self.stop_after = stop_after
        self.evaluated: list[int] = []

    def run(self, jobs: list) -> Iterator[Result]:
        for job in jobs:
            if self.stop_after is not None and len(self.evaluated) >= self.stop_after:
                raise KeyboardInterrupt
            (result,) = evaluate([job], self.quality, first_trial_id=job.trial_id, fail_every=None)
            result.eval_samples, result.parent = job.eval_samples, job.parent
            result.metrics["steps"] = job.fidelity
            self.finish(job, result)
            self.evaluated.append(job.trial_id)
            yield result

    def finish(self, job: object, result: Result) -> None:
        """What a test's executor adds to a result before it is told (nothing here)."""
