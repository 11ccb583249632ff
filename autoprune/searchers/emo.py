"""``emo``: the Pareto front itself, by NSGA-II (two objectives) or NSGA-III (three or more).

Every other searcher optimises one score under the budget and the front is whatever its
trials covered; ``emo`` searches the front of held-out error against cost directly, with
pymoo's NSGA-II (Deb et al., 2002) or NSGA-III (Deb and Jain, 2014) driven through its
ask-and-tell interface (``setup``, ``ask``, ``tell``): pymoo sorts, crowds and niches;
this module hands its populations to the run loop and its results back.

- Genome: one integer level per group (:class:`~emo_parts.LevelProblem`).
- Objectives (``objectives``): ``error`` (1 - held-out accuracy; for a language model
  its KL to the dense model) and, by default, ``flops``; ``params`` and ``latency`` (the
  latency model's prediction) may be added or swapped in, each relative to the dense
  model. Three
  or more select NSGA-III with Das-Dennis reference directions, as many as fit in the
  population.
- Budget: a constraint every candidate meets, by construction: pymoo's repair step is
  our :func:`~autoprune.searchers.repair.repair` (and :func:`fill` with
  ``use_budget: true``), so the budget is the upper edge of the front. Filling is off by
  default: it would push every member onto that edge and collapse a FLOPs objective.
- Population: ``pop_size`` (20) members per generation, each generation's offspring from
  pymoo's binary tournament, crossover (``crossover``: ``sbx`` with ``crossover_eta`` 3,
  rounded, as pymoo's documentation shows for integers; or ``ux``, ``pntx``) and
  mutation (``pm`` with ``mutation_eta`` 3, rounded). The first population is spread over
  the cost axis (:class:`~emo_parts.SpreadSampling`). Duplicates, within a population and
  against the survivors, are judged on kept channel counts.
- Asking: a population is handed out over as many ``ask(n)`` calls as it takes and given
  back to pymoo (``tell``) once every member's result is in, so the run loop's batch size
  does not matter. A member with the same kept counts as a candidate evaluated in an
  earlier generation is answered from that result rather than proposed again. pymoo's
  randomness is its own generator, seeded from the searcher's seed at setup, and results
  are filed by the proposal they answer, so the searcher is deterministic given its seed
  and results, also mid-generation, and a killed run resumes by replay.
- Failed trials count as infeasible (an extra constraint), so they rank behind every
  scored candidate without a made-up error.
- Length: ``generations`` bounds the search (None: the run's trial or time budget ends
  it); a generation costs at most ``pop_size`` trials, fewer when members repeat.

- Training-aware (``fidelities: [low, high]``, cumulative retraining steps; off by default,
  when every trial is scored at the run's ``--fidelity``): as ``darwin``'s stages, every
  new member is scored after ``low`` steps, and each member that survives into pymoo's
  next population is continued from its own weights (``Proposal.parent``) to ``high``
  steps, once. Selection compares low-fidelity scores only, so every comparison is
  between equally trained candidates; the continued scores are what the front ranks
  (it keeps the trials of the run's highest per-trial steps, so ``high - low`` must
  exceed ``low``). Every trial's weights are kept (a survivor of a later generation may
  be a candidate first scored long before).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.algorithm import Algorithm
from pymoo.core.termination import NoTermination
from pymoo.util.ref_dirs import get_reference_directions

from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.emo_parts import (
    BudgetRepair,
    LevelProblem,
    SpreadSampling,
    kept_count_duplicates,
    make_crossover,
    make_mutation,
    nsga3_selection,
)
from autoprune.searchers.objectives import (
    FAILED_ERROR,
    budget_violation,
    check_objectives,
    cost_objectives,
    error_of,
    names_latency,
)
from autoprune.searchers.population import Answer, AskTellPopulation
from autoprune.searchers.staged import check_int, check_ints

logger = logging.getLogger(__name__)

#: populations in a row made only of candidates evaluated before, before the space counts as exhausted
MAX_REPEATED_POPULATIONS = 20


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def das_dennis_partitions(n_obj: int, pop_size: int) -> int:
    """The most Das-Dennis partitions whose reference directions fit in ``pop_size``."""
    partitions = 1
    while math.comb(partitions + n_obj, n_obj - 1) <= pop_size:
        partitions += 1
    return partitions


class EmoSearcher(Searcher):
    name = "emo"
    #: a whole default population per ask; larger populations span several asks
    batch_size: ClassVar[int] = 32

    @classmethod
    def needs_latency_model(cls, options: dict[str, Any]) -> bool:
        return names_latency(options.get("objectives", ()))

    def __init__(
        self,
        *,
        problem: Problem,
        seed: int = 0,
        objectives: Sequence[str] | str = ("error", "flops"),
        pop_size: int = 20,
        generations: int | None = None,
        crossover: str = "sbx",
        crossover_eta: float = 3.0,
        mutation: str = "pm",
        mutation_eta: float = 3.0,
        use_budget: bool = False,
        fidelities: Sequence[int] | None = None,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.objectives = check_objectives(objectives, problem)
        self.pop_size = check_int("pop_size", pop_size, 4)
        if self.pop_size < len(self.objectives) + 1:
            raise ValueError(f"pop_size must exceed the number of objectives ({len(self.objectives)}), got {pop_size}")
        self.generations = None if generations is None else check_int("generations", generations, 1)
        self.crossover_eta = _positive("crossover_eta", crossover_eta)
        self.mutation_eta = _positive("mutation_eta", mutation_eta)
        self.crossover, self.mutation = crossover, mutation
        if not isinstance(use_budget, bool):
            raise ValueError(f"use_budget must be true or false, got {use_budget!r}")
        self.use_budget = use_budget
        self.fidelities = None if fidelities is None else check_ints("fidelities", fidelities, 0)
        if self.fidelities is not None and len(self.fidelities) != 2:
            raise ValueError(f"fidelities must be two step counts [low, high], got {fidelities!r}")
        if self.fidelities is not None and not self.fidelities[1] - self.fidelities[0] > self.fidelities[0]:
            raise ValueError(f"fidelities [low, high] must continue survivors more steps than offspring get "
                             f"(high - low > low, so the front holds the continued survivors), got {fidelities!r}")
        #: survivors continue their low-fidelity weights
        self.keeps_checkpoints = self.fidelities is not None
        self._trial_of: dict[tuple[int, ...], int] = {}  # the ok low-fidelity trial of each candidate
        self._continue_queue: list[Proposal] = []
        self._continuing: list[Proposal] = []  # continuations handed out, not told
        self._continued: set[tuple[int, ...]] = set()
        self._error_column = self.objectives.index("error")
        self.level_problem = LevelProblem(problem, len(self.objectives))
        self.algorithm = self._algorithm()
        self.population = AskTellPopulation(self.algorithm, self.level_problem)
        #: objectives and constraints of every candidate evaluated, by kept counts
        self._known: dict[tuple[int, ...], Answer] = {}

    def _algorithm(self) -> Algorithm:
        common: dict[str, Any] = {
            "pop_size": self.pop_size, "sampling": SpreadSampling(),
            "crossover": make_crossover(self.crossover, self.crossover_eta),
            "mutation": make_mutation(self.mutation, self.mutation_eta),
            "repair": BudgetRepair(use_budget=self.use_budget),
            "eliminate_duplicates": kept_count_duplicates(self.problem),
        }
        n_obj = len(self.objectives)
        if n_obj == 2:
            algorithm: Algorithm = NSGA2(**common)
        else:
            partitions = das_dennis_partitions(n_obj, self.pop_size)
            ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
            algorithm = NSGA3(ref_dirs=ref_dirs, selection=nsga3_selection(), **common)
        algorithm.setup(self.level_problem, seed=self.seed, termination=NoTermination(), verbose=False)
        return algorithm

    def _key(self, levels: np.ndarray) -> tuple[int, ...]:
        return tuple(int(k) for k in self.space.kept_counts(levels))

    @property
    def n_generations(self) -> int:
        """Generations pymoo has been told (0: the first population is out)."""
        return self.population.n_generations

    def _next_population(self) -> bool:
        """Ask pymoo for the next population, answering members seen before; False if none."""
        for _ in range(MAX_REPEATED_POPULATIONS):
            if self.generations is not None and self.n_generations >= self.generations:
                return False
            if not self.population.ask(lambda row: self._known.get(self._key(row))):
                return False
            if self.population.queue:
                return True
            self._give_back()  # every member was evaluated before: pymoo learns, and asks again
        logger.info("emo: %d populations in a row held only candidates evaluated before; finished",
                    MAX_REPEATED_POPULATIONS)
        return False

    def _ask(self, n: int) -> list[Proposal]:
        continuations, self._continue_queue = self._continue_queue[:n], self._continue_queue[n:]
        self._continuing.extend(continuations)
        if len(continuations) == n:
            return continuations
        if not self.population.out and not self._next_population():
            if not continuations and not self._continuing:
                self.finished = True
            return continuations
        handed = self.population.hand_out(n - len(continuations))
        fidelity = None if self.fidelities is None else self.fidelities[0]
        return continuations + [Proposal(levels=self.population.levels[i].copy(), fidelity=fidelity)
                                for i in handed]

    def _tell(self, results: list[Result]) -> None:
        for result in results:
            self._record(result)
        if self.population.complete:
            self._give_back()

    def _record(self, result: Result) -> None:
        """File ``result`` under the member it answers (matched by levels, unique in a population)."""
        if result.parent is not None:
            for position, proposal in enumerate(self._continuing):
                if proposal.parent == result.parent and np.array_equal(result.levels, proposal.levels):
                    del self._continuing[position]  # a survivor's continuation: for the front, not for pymoo
                    return
        member = self.population.outstanding_with(np.asarray(result.levels))
        if member is not None:
            answer = self._answer(result)
            self.population.answer(member, answer)
            key = self._key(self.population.levels[member])
            self._known[key] = answer
            if result.ok:
                self._trial_of[key] = result.trial_id
            return
        logger.warning("emo: ignoring result of trial %s: it answers no outstanding proposal", result.trial_id)

    def _answer(self, result: Result) -> tuple[np.ndarray, np.ndarray]:
        """Objectives and constraints of one evaluated member (a failure is infeasible)."""
        levels = np.asarray(result.levels, dtype=np.int64)
        objectives = cost_objectives(self.problem, self.objectives, levels)[0]
        error = error_of(result)
        objectives[self._error_column] = FAILED_ERROR if error is None else error
        constraints = np.append(budget_violation(self.problem, levels)[0], 0.0 if error is not None else 1.0)
        return objectives, constraints

    def _give_back(self) -> None:
        """Tell pymoo the whole population's objectives and constraints."""
        self.population.give_back()
        if self.fidelities is not None:
            self._continue_survivors()

    def _continue_survivors(self) -> None:
        """Queue every survivor not continued yet to the high fidelity, from its own weights."""
        assert self.fidelities is not None
        low, high = self.fidelities
        for row in np.asarray(self.algorithm.pop.get("X")).astype(np.int64):
            key = self._key(row)
            if key in self._continued or key not in self._trial_of:
                continue  # continued before, or failed at the low fidelity
            self._continued.add(key)
            self._continue_queue.append(Proposal(levels=row.copy(), fidelity=high - low, parent=self._trial_of[key]))

    def plan(self, trials: int) -> str:
        generations = trials // self.pop_size
        method = "NSGA-II" if len(self.objectives) == 2 else "NSGA-III"
        if generations == 0:
            return (f"emo: {trials} trials do not finish its first population of {self.pop_size}; "
                    f"ask for --trials {self.pop_size} or more")
        bought = f"emo ({method} over {', '.join(self.objectives)}): {trials} trials buy about {generations} "
        bought += "generation" if generations == 1 else "generations"
        bought = f"{bought} of {self.pop_size} (more where members repeat earlier candidates)"
        if self.fidelities is not None:
            bought += (f"; members at {self.fidelities[0]} steps, each survivor continued once to "
                       f"{self.fidelities[1]} (those trials count too)")
        return bought

    def options(self) -> dict[str, Any]:
        return {**super().options(), "objectives": list(self.objectives), "pop_size": self.pop_size,
                "generations": self.generations, "crossover": self.crossover, "crossover_eta": self.crossover_eta,
                "mutation": self.mutation, "mutation_eta": self.mutation_eta, "use_budget": self.use_budget,
                "fidelities": None if self.fidelities is None else list(self.fidelities)}
