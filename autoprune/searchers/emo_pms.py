"""``emo-pms``: EMO-PMS's divide and conquer, a front per sub-network, then whole networks.

Shang et al., "Evolutionary Multi-Objective Pruning of Deep Networks by Sub-network
Search" (EMO-PMS, arXiv:2303.16212). The paper publishes no code: this is a
reconstruction from its text, with autoprune's own measurements in place of its
training loop.

1. Split: the network divides at its stage boundaries (:mod:`autoprune.space.stages`:
   where resolution or width changes; a CIFAR ResNet's three stages), merged into
   ``sub_networks`` runs of consecutive stages with group counts as even as possible (no
   more runs than stages: asking for more keeps the stages, and the plan says so). A
   group belongs to the sub-network where it starts, so a residual stream read by the
   next stage (its first convolution and shortcut) is searched with the stage that
   writes it; the distortion at that stage's boundary counts the channels it drops.
2. Per sub-network, an NSGA-II search (pymoo, as ``emo``; :class:`~emo_pms_parts.SubNetworkSearch`)
   over the levels of the groups it owns. A member is measured as the whole network with
   every other group dense (a *measurement*: journaled, replayed on resume, allowed over
   budget, never on the front, not counted against ``--trials``), without retraining,
   on ``calibration_samples`` held-out samples (512; a language model's: 16 sequences).
   Its objectives: the sub-network's cost (``cost``: ``flops``, ``params`` or
   ``latency``, of the whole network relative to dense) and how well it reproduces the dense sub-network's output features
   (``feature_distortion:<boundary>``, :mod:`autoprune.evaluation.features`). As every
   group before it is dense, the sub-network reads the dense output of the one before:
   the paper's cross-network constraint. The sub-networks' populations are handed out
   together, so their measurements run side by side on the executor's workers.
3. Global performance impairment ranking (GPIR): every front member of every sub-network,
   in the otherwise dense network, is scored on ``gpir_samples`` held-out samples (all
   when None, the default for image models; a language model's default is
   ``calibration_samples``); its impairment is its held-out loss less the dense model's.
   When ``gpir_samples`` equals ``calibration_samples`` the search's own measurements are
   reused.
4. One member per sub-network with the least summed impairment within the budget
   (:func:`~emo_pms_parts.best_combinations`), at each of ``budget_fractions`` of the
   limits, so a run ends with a front of whole networks. These are trials, retrained at
   the run's ``--fidelity`` and scored like any other.

The paper's optional feature-mimicking training: with ``mimic_steps`` > 0 every pruned
measurement (search members and GPIR's) first trains that many steps to reproduce the
dense features at its pruned stages' boundaries, only those stages learning
(:meth:`~autoprune.evaluation.features.FeatureDistortion.mimic`); by default members are
scored as pruned, after BatchNorm recalibration.

Language models divide into runs of decoder blocks (:mod:`autoprune.llm.features`: every
block's output is a cut; the last sub-network ends at the last hidden state), with the
same objectives, GPIR (held-out cross-entropy less the dense model's) and mimicking (at
the run's ``--lr``). Samples there are held-out sequences, far dearer than images, so
the defaults score on fewer (:attr:`~autoprune.searchers.base.Problem.language_model`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from autoprune.searchers.base import MEASUREMENT, Problem, Proposal, Result, Searcher
from autoprune.searchers.emo_parts import CROSSOVERS, MUTATIONS
from autoprune.searchers.emo_pms_parts import Member, SubNetworkSearch, best_combinations
from autoprune.searchers.staged import check_int
from autoprune.space.stage_split import StageSplit

logger = logging.getLogger(__name__)

#: the prefix of the evaluator's feature-distortion metrics (``autoprune.evaluation.features``)
DISTORTION_PREFIX = "feature_distortion:"
COSTS = ("flops", "params", "latency")
DEFAULT_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
DEFAULT_SUB_NETWORKS = 3
#: held-out samples of a measurement by default: images, and a language model's sequences
DEFAULT_CALIBRATION_SAMPLES = 512
DEFAULT_LM_CALIBRATION_SAMPLES = 16
#: ``gpir_samples``'s default: all held-out samples for an image model; for a language model
#: the search's own measurements (``calibration_samples``), as every sequence is dear
BY_MODEL = "by_model"


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class EmoPmsSearcher(Searcher):
    name = "emo-pms"
    batch_size: ClassVar[int] = 32

    @classmethod
    def needs_latency_model(cls, options: dict[str, Any]) -> bool:
        return options.get("cost") == "latency"

    @classmethod
    def needs_feature_distortion(cls, options: dict[str, Any]) -> bool:
        return True

    @classmethod
    def feature_sub_networks(cls, options: dict[str, Any]) -> int | None:
        k = options.get("sub_networks", DEFAULT_SUB_NETWORKS)
        return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else None

    @classmethod
    def measurement_training(cls, options: dict[str, Any]) -> str:
        steps = options.get("mimic_steps", 0)
        return "features" if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else "task"

    def __init__(
        self,
        *,
        problem: Problem,
        seed: int = 0,
        sub_networks: int = DEFAULT_SUB_NETWORKS,
        cost: str = "flops",
        pop_size: int = 16,
        generations: int = 8,
        crossover: str = "sbx",
        crossover_eta: float = 3.0,
        mutation: str = "pm",
        mutation_eta: float = 3.0,
        calibration_samples: int | None = None,
        gpir_samples: int | str | None = BY_MODEL,
        budget_fractions: Sequence[float] = DEFAULT_FRACTIONS,
        mimic_steps: int = 0,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.sub_networks = check_int("sub_networks", sub_networks, 1)
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {list(COSTS)}, got {cost!r}")
        if cost == "latency" and problem.constraints.latency_model is None:
            raise ValueError("cost latency needs the run's latency model, which this problem lacks")
        self.cost = cost
        self.pop_size = check_int("pop_size", pop_size, 4)
        self.generations = check_int("generations", generations, 1)
        if crossover not in CROSSOVERS:
            raise ValueError(f"crossover must be one of {list(CROSSOVERS)}, got {crossover!r}")
        if mutation not in MUTATIONS:
            raise ValueError(f"mutation must be one of {list(MUTATIONS)}, got {mutation!r}")
        self.crossover, self.mutation = crossover, mutation
        self.crossover_eta = _positive("crossover_eta", crossover_eta)
        self.mutation_eta = _positive("mutation_eta", mutation_eta)
        if calibration_samples is None:
            calibration_samples = (DEFAULT_LM_CALIBRATION_SAMPLES if problem.language_model
                                   else DEFAULT_CALIBRATION_SAMPLES)
        self.calibration_samples = check_int("calibration_samples", calibration_samples, 1)
        if gpir_samples == BY_MODEL:
            gpir_samples = self.calibration_samples if problem.language_model else None
        self.gpir_samples = None if gpir_samples is None else check_int("gpir_samples", gpir_samples, 1)
        self.mimic_steps = check_int("mimic_steps", mimic_steps, 0)
        fractions = list(budget_fractions) if isinstance(budget_fractions, (list, tuple)) else None
        if (not fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1
                                 for f in fractions)):
            raise ValueError(f"budget_fractions must be a non-empty list of fractions in (0, 1], "
                             f"got {budget_fractions!r}")
        self.budget_fractions = sorted({float(f) for f in fractions}, reverse=True)
        found = problem.stages() if problem.stages is not None else None
        if found is None:
            raise ValueError("emo-pms divides the model at its stage boundaries, and this model has none it can "
                             "find (a language model needs groups in at least two decoder blocks); use emo")
        self.split: StageSplit = found.merged(min(self.sub_networks, found.n_stages))
        self.searches = [
            SubNetworkSearch(problem=problem, groups=self.split.groups_of(k), cost=cost, pop_size=self.pop_size,
                             generations=self.generations, crossover=crossover, crossover_eta=self.crossover_eta,
                             mutation=mutation, mutation_eta=self.mutation_eta, seed=self.seed + k)
            for k in range(self.split.n_stages)
        ]
        self._phase = "start"
        self._queue: list[tuple[Proposal, Any]] = []  # what the current phase still has to hand out
        self._outstanding: list[tuple[Proposal, Any]] = []  # handed out, not told
        self._dense: dict[int | None, dict[str, float]] = {}  # the dense model's metrics by eval_samples
        #: every measurement told, by (kept counts, eval_samples)
        self._measured: dict[tuple[tuple[int, ...], int | None], dict[str, float] | None] = {}
        self._fronts: list[list[Member]] = []
        self._impairments: list[list[float]] = []
        self._report: dict[str, Any] = {}

    # -- asking --------------------------------------------------------------------
    def _measurement(self, levels: np.ndarray, samples: int | None) -> Proposal:
        """A pruned network measured, after ``mimic_steps`` of feature mimicking (the dense
        one has nothing to learn and is measured as it is)."""
        pruned = bool(np.any(self.space.kept_counts(levels) < self.space.kept_counts(self.space.dense_candidate())))
        return Proposal(levels=levels, fidelity=self.mimic_steps if pruned else 0, eval_samples=samples,
                        kind=MEASUREMENT)

    def _key(self, levels: np.ndarray, samples: int | None) -> tuple[tuple[int, ...], int | None]:
        return tuple(int(k) for k in self.space.kept_counts(levels)), samples

    def _ask(self, n: int) -> list[Proposal]:
        handed: list[Proposal] = []
        while len(handed) < n:
            if not self._queue:
                if self._outstanding or not self._advance():
                    break
                continue
            proposal, tag = self._queue.pop(0)
            self._outstanding.append((proposal, tag))
            handed.append(proposal)
        if not handed and not self._outstanding and self._phase == "done":
            self.finished = True
        return handed

    def _advance(self) -> bool:
        """Fill the queue with what comes next; False when nothing can be handed out now."""
        if self._phase == "start":
            self._phase = "dense"
            dense = self.space.dense_candidate()
            samples = [self.calibration_samples]
            if self.gpir_samples != self.calibration_samples:
                samples.append(self.gpir_samples)  # type: ignore[arg-type]
            self._queue = [(self._measurement(dense, s), ("dense", s)) for s in samples]
            return True
        if self._phase == "dense":
            self._phase = "search"
        if self._phase == "search":
            self._queue = self._search_members()
            if self._queue:
                return True
            if any(not s.done for s in self.searches):
                return False  # populations still out (answered from earlier results elsewhere)
            self._phase = "gpir"
            self._queue = self._gpir_measurements()
            if self._queue:
                return True
        if self._phase == "gpir":
            self._rank()
            self._phase = "final"
            self._queue = [(p, ("trial", None)) for p in self._final_trials()]
            if self._queue:
                return True
        self._phase = "done"
        return False

    def _search_members(self) -> list[tuple[Proposal, Any]]:
        """The members every sub-network's current population still needs, side by side."""
        queue: list[tuple[Proposal, Any]] = []
        for k, search in enumerate(self.searches):
            while search.needs_population:
                search.next_population(lambda sub, k=k: self._measured_member(k, sub))
            for member in search.hand_out():
                levels = search.embed(search.levels_of(member))
                queue.append((self._measurement(levels, self.calibration_samples), ("member", (k, member))))
        return queue

    def _measured_member(self, k: int, sub_levels: np.ndarray) -> Member | None:
        """Sub-network ``k``'s member at ``sub_levels`` if its whole network was measured
        before (the dense one, measured first); None when it still has to be."""
        key = self._key(self.searches[k].embed(sub_levels), self.calibration_samples)
        if key not in self._measured:
            return None
        return self._member(k, sub_levels, self._measured[key])

    def _member(self, k: int, sub_levels: np.ndarray, metrics: dict[str, float] | None) -> Member:
        search = self.searches[k]
        boundary = DISTORTION_PREFIX + self.split.boundaries[k]
        distortion = None if metrics is None else metrics.get(boundary)
        loss = None if metrics is None else metrics.get("loss")
        return search.member(sub_levels, distortion=distortion, loss=loss)

    def _gpir_measurements(self) -> list[tuple[Proposal, Any]]:
        self._fronts = [search.front() for search in self.searches]
        if self.gpir_samples == self.calibration_samples:
            return []
        queue = []
        for k, front in enumerate(self._fronts):
            for member in front:
                levels = self.searches[k].embed(member.levels)
                if self._key(levels, self.gpir_samples) not in self._measured:
                    queue.append((self._measurement(levels, self.gpir_samples), ("gpir", None)))
        return queue

    def _rank(self) -> None:
        """Each front member's impairment: its held-out loss less the dense model's."""
        dense_loss = (self._dense.get(self.gpir_samples) or {}).get("loss")
        self._impairments = []
        for k, front in enumerate(self._fronts):
            impairments = []
            for member in front:
                metrics = self._measured.get(self._key(self.searches[k].embed(member.levels), self.gpir_samples))
                loss = None if metrics is None else metrics.get("loss")
                ok = loss is not None and dense_loss is not None and math.isfinite(loss)
                impairments.append(float(loss - dense_loss) if ok else math.inf)  # type: ignore[operator]
            self._impairments.append(impairments)
        self._report["fronts"] = [
            [{"levels": m.levels.tolist(), "distortion": m.distortion, "cost": m.cost,
              "impairment": imp if math.isfinite(imp) else None} for m, imp in zip(front, imps)]
            for front, imps in zip(self._fronts, self._impairments)]

    def _final_trials(self) -> list[Proposal]:
        usable = [[(m, imp) for m, imp in zip(front, imps) if math.isfinite(imp)]
                  for front, imps in zip(self._fronts, self._impairments)]
        groups = [np.asarray(self.split.groups_of(k), dtype=np.int64) for k in range(self.split.n_stages)]
        chosen = best_combinations(self.problem, groups, [[m.levels for m, _ in u] for u in usable],
                                   [[imp for _, imp in u] for u in usable], self.budget_fractions)
        proposals, seen = [], set()
        for fraction, levels in zip(self.budget_fractions, chosen):
            if levels is None:
                continue
            key = tuple(self.space.kept_counts(levels).tolist())
            if key in seen or not self.problem.feasible(levels)[0]:
                continue
            seen.add(key)
            proposals.append(Proposal(levels=levels))
        if not proposals:
            logger.warning("emo-pms: no combination of the sub-networks' fronts meets the budget")
        self._report["combinations"] = len(proposals)
        return proposals

    # -- telling -------------------------------------------------------------------
    def _tell(self, results: list[Result]) -> None:
        for result in results:
            entry = next((e for e in self._outstanding if np.array_equal(e[0].levels, result.levels)
                          and e[0].eval_samples == result.eval_samples and e[0].kind == result.kind), None)
            if entry is None:
                logger.warning("emo-pms: ignoring result of trial %s: it answers no outstanding proposal",
                               result.trial_id)
                continue
            self._outstanding.remove(entry)
            proposal, (what, detail) = entry
            metrics = dict(result.metrics) if result.ok else None
            if proposal.kind == MEASUREMENT:
                self._measured[self._key(proposal.levels, proposal.eval_samples)] = metrics
            if what == "dense":
                self._dense[detail] = metrics or {}
            elif what == "member":
                k, member = detail
                search = self.searches[k]
                search.answer(member, self._member(k, search.levels_of(member), metrics))

    # -- what the rest of autoprune reads ----------------------------------------------
    def plan(self, trials: int) -> str:
        k = self.split.n_stages
        most = k * self.pop_size * self.generations
        kept = "" if trials >= len(self.budget_fractions) else f"; --trials {trials} keeps only the first {trials}"
        mimic = f", each after {self.mimic_steps} steps of feature mimicking" if self.mimic_steps else ""
        unit = "sequences" if self.problem.language_model else "samples"
        gpir = ("GPIR reuses them" if self.gpir_samples == self.calibration_samples
                else f"then GPIR's on {self.gpir_samples or 'all'} held-out {unit}")
        fewer = (f" (sub_networks={self.sub_networks} asked, but the model divides into {k} stages)"
                 if self.sub_networks > k else "")
        return (f"emo-pms: {k} sub-networks{fewer}, each up to {self.generations} generations of {self.pop_size} "
                f"(at most {most} measurements on {self.calibration_samples} held-out {unit}{mimic}; {gpir}; "
                f"not counted in --trials), then up to {len(self.budget_fractions)} whole networks{kept}")

    def report(self) -> dict[str, Any]:
        if not self._report:
            return {}
        sizes = [len(f) for f in self._report.get("fronts", [])]
        summary = [f"emo-pms: {self.split.n_stages} sub-networks ending at {', '.join(self.split.boundaries)}; "
                   f"fronts of {', '.join(map(str, sizes))} members; {self._report.get('combinations', 0)} whole "
                   "networks proposed"]
        return {**self._report, "split": self.split.to_dict(), "summary": summary}

    def options(self) -> dict[str, Any]:
        return {**super().options(), "sub_networks": self.sub_networks, "cost": self.cost, "pop_size": self.pop_size,
                "generations": self.generations, "crossover": self.crossover, "crossover_eta": self.crossover_eta,
                "mutation": self.mutation, "mutation_eta": self.mutation_eta,
                "calibration_samples": self.calibration_samples, "gpir_samples": self.gpir_samples,
                "budget_fractions": list(self.budget_fractions), "mimic_steps": self.mimic_steps}
