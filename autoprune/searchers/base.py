"""The ask/tell interface every searcher implements (no torch import).

A searcher proposes candidates (``ask``) and learns from evaluated ones (``tell``). As in
pymoo, the public methods validate and record and a private hook does the work:
``ask`` refuses any proposal outside the space or over budget, so a searcher bug can
never spend an evaluation on a model the user did not allow.

A searcher is deterministic given its seed and the sequence of results it was told;
the run loop relies on this to resume a killed run by replaying the journal.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autoprune.space.budget import Constraints
from autoprune.space.search_space import SearchSpace
from autoprune.space.stage_split import StageSplit

logger = logging.getLogger(__name__)

#: a proposal's kind: a candidate model (on the front when it is within budget and ok)
TRIAL = "trial"
#: a measurement the searcher needs (a sensitivity probe, a calibration run): journaled like
#: a trial so a resume never repeats it, exempt from the budget check, never on the front,
#: and not counted against ``--trials``
MEASUREMENT = "measurement"
KINDS = (TRIAL, MEASUREMENT)


#: per-channel importance of every group (one array per group, in space order, over the
#: group's channels), by the name of an importance criterion ("magnitude", "taylor", "bn_scale")
ChannelScores = Callable[[str], list[np.ndarray]]
#: the model's stages (:class:`~autoprune.space.stage_split.StageSplit`), found on the dense
#: model when first asked; None where it has no stage boundaries
Stages = Callable[[], StageSplit | None]


@dataclass(frozen=True)
class Problem:
    """What a searcher searches: the space and the FLOPs/params limits it must respect.

    ``channel_scores`` computes per-channel importance on the dense model (the torch side
    provides it for image models; None where the task has none): searchers that rank
    channels, as Torch-Pruning's global pruning does, ask for it by criterion. ``stages``
    finds where the model divides into stages (an image model's changes of resolution or
    width, a language model's decoder blocks; None where the task has none), for
    searchers that divide the network."""

    space: SearchSpace
    constraints: Constraints
    channel_scores: ChannelScores | None = field(default=None, compare=False)
    stages: Stages | None = field(default=None, compare=False)
    #: a language model's problem: its held-out samples are token sequences, each far dearer
    #: to score than an image, so searchers that score on a number of them choose fewer
    language_model: bool = False

    def feasible(self, levels: np.ndarray) -> np.ndarray:
        return self.constraints.feasible(self.space, levels)

    def least_pruning_uniform(self) -> np.ndarray | None:
        """The same level in every group, the least pruning that meets the budget: the
        baseline, and the start of the searchers that begin from it; None where no uniform
        level fits (a hand-built limit that only mixed levels meet)."""
        for level in range(self.space.n_levels):
            candidate = self.space.uniform_candidate(level)
            if self.feasible(candidate)[0]:
                return candidate
        return None


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate.

    ``fidelity``: retraining steps (``None``: the run's default; 0: no retraining, e.g. for
    a cheap output-distance fitness). ``eval_samples``: how many held-out samples to score
    on (``None``: all). ``parent``: id of an evaluated trial whose trained weights this
    evaluation continues from, so staged selection does not pay for the same steps twice;
    usually at the same levels, else at levels where every group keeps at most the
    parent's channels (``dp``'s rounds: its weights are narrowed to them). ``draw``: which draw of the training randomness (batch order,
    BatchNorm batches) to retrain with; trials of the same draw share it (common random
    numbers, so they differ only by their allocation), and draw 0 is the run's seed itself.
    A searcher scores a candidate again on a new draw to average out a lucky one.
    ``kind``: :data:`TRIAL` (a candidate) or :data:`MEASUREMENT` (evaluated and journaled the
    same way, but allowed over budget and kept off the front).
    """

    levels: np.ndarray
    fidelity: int | None = None
    eval_samples: int | None = None
    parent: int | None = None
    draw: int = 0
    kind: str = TRIAL


@dataclass
class Result:
    """An evaluated proposal. ``status`` is "ok" or "failed"; ``metrics`` holds at least
    ``accuracy`` and ``loss`` (held-out data) when ok."""

    trial_id: int
    levels: np.ndarray
    fidelity: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    eval_samples: int | None = None
    parent: int | None = None
    draw: int = 0
    kind: str = TRIAL
    #: trained weights, handed from the executor to the checkpoint store; never journaled
    state: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Searcher(ABC):
    """Base class: subclasses implement ``_ask`` and, when they learn, ``_tell``."""

    #: the name users pass to ``--searcher``
    name: ClassVar[str]
    #: how many proposals the run loop asks for at a time (fixed, so that results do not
    #: depend on how many workers evaluate them)
    batch_size: ClassVar[int] = 8
    #: True when proposals name a ``parent`` to continue training from: the run then keeps
    #: each trial's trained weights in ``RUN_DIR/checkpoints`` (a searcher whose options
    #: decide it sets it per instance)
    keeps_checkpoints: bool = False
    #: True when the searcher keeps a choice of its own (:meth:`incumbent`, e.g. darwin's
    #: last parent), so ``--pick searcher`` and ``auto`` mean something for its runs
    keeps_choice: ClassVar[bool] = False
    #: when that choice is first made, in words ("the end of its first generation"), for
    #: the message that explains an empty ``--pick searcher``
    choice_after: ClassVar[str] = ""
    #: True when the searcher sets every proposal's fidelity itself (its stages), so the
    #: run's ``--fidelity`` does not apply to it
    sets_fidelity: ClassVar[bool] = False

    def __init__(self, *, problem: Problem, seed: int = 0) -> None:
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a Problem, got {type(problem).__name__}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.problem = problem
        self.space = problem.space
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.n_asked = 0
        self.n_told = 0
        self.finished = False

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` proposals (fewer, or none once the searcher is finished)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if self.finished:
            return []
        proposals = self._ask(int(n))
        if len(proposals) > n:
            raise RuntimeError(f"searcher {self.name!r} returned {len(proposals)} proposals when asked for {n}")
        checked = []
        for p in proposals:
            levels = self.space.check(p.levels)
            if levels.ndim != 1:
                raise RuntimeError(f"searcher {self.name!r} proposed levels of shape {levels.shape}, not one vector")
            if p.kind not in KINDS:
                raise RuntimeError(f"searcher {self.name!r} proposed kind {p.kind!r}, not one of {KINDS}")
            if p.kind == TRIAL and not self.problem.feasible(levels)[0]:
                raise RuntimeError(f"searcher {self.name!r} proposed a candidate over budget: {levels.tolist()}")
            for what, value in (("fidelity", p.fidelity), ("eval_samples", p.eval_samples), ("parent", p.parent),
                                ("draw", p.draw)):
                if value is not None and (not isinstance(value, (int, np.integer)) or value < 0):
                    raise RuntimeError(f"searcher {self.name!r} proposed {what} {value!r}, not a whole number >= 0")
            checked.append(Proposal(
                levels=levels.copy(),
                fidelity=None if p.fidelity is None else int(p.fidelity),
                eval_samples=None if p.eval_samples is None else int(p.eval_samples),
                parent=None if p.parent is None else int(p.parent),
                draw=int(p.draw or 0),
                kind=p.kind,
            ))
        self.n_asked += len(checked)
        return checked

    def tell(self, results: list[Result]) -> None:
        """Learn from evaluated proposals (failed ones included, with their status)."""
        self.n_told += len(results)
        self._tell(list(results))

    def plan(self, trials: int) -> str | None:
        """One sentence on what ``trials`` buys this searcher (generations, rounds), for a
        user who left ``--trials`` at its default; None when there is nothing to say."""
        return None

    @classmethod
    def needs_latency_model(cls, options: dict[str, Any]) -> bool:
        """Whether a run with these searcher ``options`` needs the latency model without a
        latency budget (an objective that predicts latency): the run then measures it."""
        return False

    @classmethod
    def needs_feature_distortion(cls, options: dict[str, Any]) -> bool:
        """Whether the run's evaluator must report ``feature_distortion:<boundary>`` at every
        stage boundary (:mod:`autoprune.evaluation.features`), e.g. for ``emo-pms``."""
        return False

    @classmethod
    def feature_sub_networks(cls, options: dict[str, Any]) -> int | None:
        """How many runs of consecutive stages the searcher reads the feature distortion of
        (:meth:`~autoprune.space.stage_split.StageSplit.merged`), so the evaluator measures
        only their boundaries; None: every stage boundary."""
        return None

    @classmethod
    def measurement_training(cls, options: dict[str, Any]) -> str:
        """How the run's measurements retrain their ``fidelity`` steps: ``task`` (as trials
        do) or ``features`` (mimicking the dense features at the pruned stages' boundaries,
        :meth:`~autoprune.evaluation.features.FeatureDistortion.mimic`, which needs
        :meth:`needs_feature_distortion`), e.g. for ``emo-pms`` with ``mimic_steps``."""
        return "task"

    def live_checkpoints(self) -> set[int] | None:
        """Trial ids whose kept weights a later proposal may still continue (``parent``);
        the run deletes the others, so a staged search keeps a few checkpoints at a time
        instead of one per trial (a language model's is hundreds of MB). None (the default)
        keeps every checkpoint. Asked after each ``tell``; the answer must follow from what
        the searcher has been told, so that a resumed run deletes the same ones."""
        return None

    def report(self) -> dict[str, Any]:
        """What the searcher learnt about the run that a user should see (e.g. ``dp``'s
        additivity check), JSON-serialisable, kept in run.json and shown in the summary;
        empty when there is nothing to say."""
        return {}

    def keep_files_in(self, run_dir: Path) -> None:
        """Where a searcher may keep files of its own (a library's record of its study, for
        the library's own tools); called once before the first ask of a run or resume.
        Never what a resume relies on: a resume replays the journal into a fresh searcher."""

    def incumbent(self) -> int | None:
        """The trial id of the candidate this searcher would hand over now, for searchers
        with their own notion of best (darwin: its parent, whose last-stage score may come
        from a later draw than the best one seen); None leaves the choice to the front."""
        return None

    @abstractmethod
    def _ask(self, n: int) -> list[Proposal]:
        """Return up to ``n`` feasible proposals; set ``self.finished`` when done."""

    def _tell(self, results: list[Result]) -> None:
        """Learn from results; searchers that do not learn keep this default."""

    def options(self) -> dict[str, Any]:
        """The searcher's settings, recorded in ``run.json``."""
        return {"seed": self.seed, "batch_size": self.batch_size}
