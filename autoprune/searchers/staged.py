"""Staged selection: score many candidates cheaply, spend more only on the best.

DarwinLM and Týr-the-Pruner select each generation's offspring in stages: all are scored
on little data (and, in DarwinLM, after a little training), the best few are scored again
on more data (after more training), and so on until one is left, which becomes the next
parent. The parent itself joins the last stage, so a generation never makes things worse
(elitism). :class:`Generation` is that bookkeeping for one generation, independent of how
candidates were bred; the searchers hand it offspring and read back the winner.

Two kinds of stage:

- *continued* (DarwinLM): stage ``k`` retrains a survivor ``steps[k] - steps[k-1]`` more
  steps from the weights its stage ``k-1`` trial left (``Proposal.parent``), so at every
  stage all entrants have had the same ``steps[k]`` cumulative steps along the same chain
  of schedules, and comparing them is fair;
- *fresh* (Týr, ``steps`` all 0): every stage scores from scratch, only on more data.

The parent's result at the last stage must be comparable to the finalists': same
cumulative training through the same chain, same scoring data, same draw of training
randomness (``draws[0]``, shared by every trial of a generation). A parent that won an
earlier generation on the same draw has exactly that result already (its own final-stage
trial), which is reused rather than re-evaluated: a re-run would be the same trial, which
the run loop would answer from its cache anyway. A parent without such a result (the
first parent, or any parent when each generation has its own draw) is scored again: a
continued schedule carries it through every stage beside the offspring (it never
competes for a survivor place); a fresh one scores it at the last stage.

Averaged last stage (``draws`` with several entries): every stage trains on ``draws[0]``;
the last stage scores each entrant once per draw, each continuing from the same
second-to-last trial (or from scratch with a single stage), and ranks by the mean fitness.
A parent re-proposes its trials on the extra draws each generation; they are the same
trials as when it won, so the run loop answers them from its cache.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from autoprune.searchers.base import Proposal, Result

logger = logging.getLogger(__name__)

FITNESS_METRICS = ("loss", "kl_to_dense")


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, or ValueError naming ``name`` (booleans are not numbers here)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_ints(name: str, values: object, minimum: int, length: int | None = None) -> tuple[int, ...]:
    """A non-empty list of whole numbers >= ``minimum`` (of ``length`` entries when given)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of whole numbers, got {values!r}")
    out = tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(values))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have one entry per stage ({length}, as survivors), got {list(out)}")
    return out


@dataclass(frozen=True)
class Schedule:
    """Stage sizes and costs: ``survivors[k]`` advance from stage ``k``, scored on
    ``samples[k]`` held-out samples after ``steps[k]`` cumulative retraining steps."""

    survivors: tuple[int, ...]
    steps: tuple[int, ...]
    samples: tuple[int, ...]

    @classmethod
    def build(cls, *, offspring: int, survivors: object, steps: object, samples: object,
              steps_name: str = "stage_steps", samples_name: str = "stage_samples") -> "Schedule":
        """Validate the options of a staged searcher, naming the argument at fault."""
        kept = check_ints("survivors", survivors, 1)
        if any(b > a for a, b in zip(kept, kept[1:])):
            raise ValueError(f"survivors must not grow from stage to stage, got {list(kept)}")
        if kept[0] > offspring:
            raise ValueError(f"survivors[0] must be at most offspring ({offspring}), got {list(kept)}")
        if kept[-1] != 1:
            raise ValueError(f"survivors must end with 1 (one winner per generation), got {list(kept)}")
        cumulative = check_ints(steps_name, steps, 0, len(kept))
        if any(b < a for a, b in zip(cumulative, cumulative[1:])):
            raise ValueError(f"{steps_name} counts cumulative steps and cannot decrease, got {list(cumulative)}")
        data = check_ints(samples_name, samples, 1, len(kept))
        if any(b < a for a, b in zip(data, data[1:])):
            raise ValueError(f"{samples_name} must not shrink from stage to stage, got {list(data)}")
        return cls(survivors=kept, steps=cumulative, samples=data)

    @property
    def n_stages(self) -> int:
        return len(self.survivors)


def live_after(generation: "Generation | None", parent_result: Result | None) -> set[int]:
    """What a staged searcher must keep (:meth:`Searcher.live_checkpoints`): its
    generation's live trials, and its parent's last trial and the one that trial
    continued (a parent re-proposes those on the last stage's extra draws)."""
    live = generation.live_checkpoints() if generation is not None else set()
    if parent_result is not None:
        live.add(parent_result.trial_id)
        if parent_result.parent is not None:
            live.add(parent_result.parent)
    return live


def fitness_of(metric: str) -> Callable[[Result | None], float]:
    """Lower is better; a failed trial or a missing or non-finite metric is the worst."""
    if metric not in FITNESS_METRICS:
        raise ValueError(f"fitness must be one of {FITNESS_METRICS}, got {metric!r}")

    def fitness(result: Result | None) -> float:
        if result is None or not result.ok:
            return math.inf
        value = result.metrics.get(metric)
        return float(value) if value is not None and math.isfinite(value) else math.inf

    return fitness


@dataclass(eq=False)
class Member:
    """A candidate in a generation and its latest result (None until scored); at the last
    stage ``result`` is the one on the generation's first draw, ``extra`` those on the others."""

    levels: np.ndarray
    elite: bool = False
    result: Result | None = None
    stage: int = -1  # the stage ``result`` belongs to
    extra: dict[int, Result] = field(default_factory=dict)


@dataclass
class _Handout:
    member: Member
    proposal: Proposal


@dataclass
class Generation:
    """One generation's staged selection (see the module docstring)."""

    offspring: list[np.ndarray]
    elite_levels: np.ndarray
    elite_result: Result | None
    schedule: Schedule
    continued: bool
    fitness: Callable[[Result | None], float]
    #: draws of training randomness: every stage trains on the first; the last stage
    #: scores each entrant on each and ranks by the mean fitness
    draws: tuple[int, ...] = (0,)
    #: the stage under way (``schedule.n_stages - 1`` once done)
    stage: int = field(default=0, init=False)
    #: members entering each stage, for the record
    entrants: list[list[Member]] = field(default_factory=list, init=False)
    #: the last stage's best, set when the generation is done
    winner: Member | None = field(default=None, init=False)
    _queue: list[_Handout] = field(default_factory=list, init=False, repr=False)
    _outstanding: list[_Handout] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.draws or len(set(self.draws)) != len(self.draws):
            raise ValueError(f"draws must be distinct and at least one, got {self.draws!r}")
        self.elite = Member(levels=np.array(self.elite_levels, dtype=np.int64), elite=True,
                            result=self.elite_result,
                            stage=self.schedule.n_stages - 1 if self.elite_result is not None else -1)
        members = [Member(levels=np.array(c, dtype=np.int64)) for c in self.offspring]
        if self.continued and self.elite_result is None:
            members.append(self.elite)  # carried through every stage, never competing for a place
        self._enter(members)

    @property
    def done(self) -> bool:
        return self.winner is not None

    def live_checkpoints(self) -> set[int]:
        """Trials a proposal of this generation may still continue: the parents of the
        proposals not yet answered, and while a stage is under way every result it has
        (any may advance). A closed stage's losers are never continued again."""
        live = {h.proposal.parent for h in self._queue + self._outstanding if h.proposal.parent is not None}
        if not self.done:
            live.update(m.result.trial_id for m in self.entrants[self.stage]
                        if m.result is not None and m.stage == self.stage)
        return live

    def take(self, n: int) -> list[Proposal]:
        """Up to ``n`` proposals of the current stage not handed out yet."""
        handed, self._queue = self._queue[:n], self._queue[n:]
        self._outstanding.extend(handed)
        return [h.proposal for h in handed]

    def record(self, result: Result) -> bool:
        """File ``result`` under the proposal it answers; False when it answers none.

        Results arrive in ask order, but matching by levels and draw (unique within a
        stage) also survives a caller that tells them otherwise.
        """
        for i, handout in enumerate(self._outstanding):
            proposal = handout.proposal
            if np.array_equal(result.levels, proposal.levels) and result.draw == proposal.draw:
                del self._outstanding[i]
                if proposal.draw == self.draws[0]:
                    handout.member.result = result
                    handout.member.stage = self.stage
                else:
                    handout.member.extra[proposal.draw] = result
                if not self._queue and not self._outstanding:
                    self._close_stage()
                return True
        logger.warning("ignoring result of trial %s: it answers no outstanding proposal", result.trial_id)
        return False

    def _proposal(self, member: Member) -> Proposal:
        k, schedule = self.stage, self.schedule
        if not self.continued:
            return Proposal(levels=member.levels, fidelity=schedule.steps[k], eval_samples=schedule.samples[k],
                            draw=self.draws[0])
        parent = member.result.trial_id if member.result is not None else None
        already = schedule.steps[member.stage] if member.result is not None else 0
        return Proposal(levels=member.levels, fidelity=schedule.steps[k] - already,
                        eval_samples=schedule.samples[k], parent=parent, draw=self.draws[0])

    def _final_fitness(self, member: Member) -> float:
        """The mean fitness over the last stage's draws; the worst if any is missing or failed."""
        results = [member.result] + [member.extra.get(d) for d in self.draws[1:]]
        values = [self.fitness(r) for r in results]
        return math.inf if not all(math.isfinite(v) for v in values) else float(np.mean(values))

    def _enter(self, members: list[Member]) -> None:
        """Start the current stage: score ``members``; the elite joins the last stage.

        An elite that was not carried joins with the result it has (its final trial of
        the generation it won, or the failed trial that dropped it); only a first parent
        never scored (fresh stages) is scored here.
        """
        to_score = list(members)
        last = self.stage == self.schedule.n_stages - 1
        if last and not any(m.elite for m in members):
            members = members + [self.elite]
            if self.elite.result is None:
                to_score.append(self.elite)
        self.entrants.append(members)
        self._queue = [_Handout(m, self._proposal(m)) for m in to_score]
        if last and len(self.draws) > 1:
            self._queue += [_Handout(h.member, replace(h.proposal, draw=d)) for h in list(self._queue)
                            for d in self.draws[1:]]
            kept = self.elite.result
            if self.elite not in to_score and kept is not None and kept.ok:  # its trials on the other draws
                self._queue += [_Handout(self.elite, Proposal(levels=self.elite.levels, fidelity=kept.fidelity,
                                                               eval_samples=kept.eval_samples, parent=kept.parent,
                                                               draw=d)) for d in self.draws[1:]]
        if not self._queue:
            self._close_stage()

    def _close_stage(self) -> None:
        members = self.entrants[self.stage]
        if self.stage == self.schedule.n_stages - 1:
            scored = [m for m in members if not m.elite] + [self.elite]  # ties go to offspring
            best = min(scored, key=self._final_fitness)
            self.winner = best if math.isfinite(self._final_fitness(best)) else self.elite
            return
        ranked = sorted((m for m in members if not m.elite and math.isfinite(self.fitness(m.result))),
                        key=lambda m: self.fitness(m.result))
        advancing = ranked[: self.schedule.survivors[self.stage]]
        if any(m.elite for m in members) and math.isfinite(self.fitness(self.elite.result)):
            advancing.append(self.elite)  # a failed carried elite cannot be continued
        self.stage += 1
        self._enter(advancing)
