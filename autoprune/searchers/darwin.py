"""``darwin``: DarwinLM's training-aware evolutionary search (Tang et al., 2025, arXiv:2502.07780).

"DarwinLM: Evolutionary Structured Pruning of Large Language Models" searches a per-layer
level allocation with a (1 + λ) evolution whose selection is *training-aware*: offspring
are ranked after a little retraining, and the best retrained longer, because how well a
pruned model recovers is what matters, not how it scores the moment it is cut.

- Genome: one level per group. The first parent is the least-pruning uniform level that
  meets the budget, given back what budget is left (:func:`~mutation.fill_steps`).
- Mutation: level swaps (:mod:`autoprune.searchers.mutation`), min(U{1..3}, U{1..3}) per
  child as in the authors' released code, groups drawn in proportion to the cost a step moves;
  children stay within budget and use nearly all of it. A child already seen (by kept
  counts, so two names of the same model count once) or equal to its parent is redrawn,
  at most ``REDRAWS`` times per place.
- Selection in stages (:mod:`autoprune.searchers.staged`): ``offspring`` children are
  scored after ``stage_steps[0]`` retraining steps on ``stage_samples[0]`` held-out
  samples; ``survivors[k]`` go on, each continuing its own weights (``Proposal.parent``)
  to ``stage_steps[k+1]`` cumulative steps and scored on more data. The parent joins the
  last stage; the last stage's best becomes the next parent.

Defaults follow the paper's released search script (``struct_prune_search.sh``): 16
offspring, survivors 8, 4, 2, 1, scoring data doubling per stage (1024 to 8192 tokens
there; 512 to 4096 held-out samples here) and training data 10K, 50K, 100K and 200K
tokens per stage. That script retrains every stage from the pruned weights; continuing
instead reaches the same cumulative budget per stage, so here ``stage_steps`` are
cumulative 10, 50, 100, 200 steps and a survivor pays only the difference.

Draws: by default the whole search retrains on one draw of training randomness (common
random numbers), and a parent keeps the score it won with. The released search script
instead samples new training and scoring batches at every selection step of every
generation, so no score carries over; ``fresh_draws: true`` does that here: each
generation retrains on its own draw (``Proposal.draw`` = the generation's number) and the
parent is retrained beside its offspring on it (carried through the stages, as the first
parent is; 4 more trials per generation). It frees a search from a parent whose one
score was lucky, but on resnet20/Fashion-MNIST at flops=0.05 it did much worse
(``experiments/README.md``, ``darwin_fresh``): the same candidate's proxy loss moves from
draw to draw by more than most children differ, so the parent random-walks into lopsided
allocations the final retraining punishes. One draw stays the default. The searcher's
pick (:meth:`incumbent`) is its last parent, on one draw also its lowest last-stage loss.

``final_draws`` > 1 averages instead: the last stage retrains each finalist and the
parent on that many draws (each continuing from the same second-to-last trial) and ranks
by the mean loss, so one lucky draw does not make a parent. The draws are the same in
every generation (common random numbers still), so the parent's trials are reused. Cost:
``2 * (final_draws - 1)`` more last-stage trials per generation with the default stages,
and as many once for each new parent. On the same study ``final_draws: 3`` reached 89.7%
(+0.1 over one draw, within the seeds' spread of 0.4) for 30% more retraining steps; the
paper's single score stays the default.

Fitness is the held-out loss (lower is better), or ``kl_to_dense``, the script's default,
the KL divergence of the dense model's predictions to the candidate's. Failed trials
rank last. The run's ``--fidelity`` is not used: the stages set every trial's steps.
``generations`` bounds the search (the script runs 200); by default the run's trial or
time budget ends it. ``patience`` ends it once the parent has won that many generations
in a row: on one draw a parent's score is fixed, and its lucky low loss is what every
child must beat, so a search often stops moving early. On resnet20 at flops=0.05, 4 of
6 runs of 480 trials had found their final parent by trial 74, and three continued to
960 trials kept the parent they had by trial 242 (``search_progress_960.md``); at
flops=0.15 parents still changed late, but retrained no better than the first
generation's winner (``search_progress_015.md``). Off by default, as in the paper.
One generation costs ``offspring + sum(survivors[:-1])`` trials (30 by default); the
first costs one more per stage, for the first parent's own chain.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.mutation import DARWIN_MAX_SWAPS, GridSteps, fill_steps, mutate
from autoprune.searchers.repair import repair
from autoprune.searchers.staged import Generation, Schedule, check_int, fitness_of, live_after

logger = logging.getLogger(__name__)

#: redraws allowed per offspring place before a generation makes do with fewer children
REDRAWS = 10


class DarwinSearcher(Searcher):
    name = "darwin"
    #: one stage per ask with the default 16 offspring (17 in the first generation, where
    #: the parent is carried through the stages); larger stages span several asks
    batch_size: ClassVar[int] = 32
    keeps_checkpoints = True
    keeps_choice: ClassVar[bool] = True
    choice_after: ClassVar[str] = "the end of its first generation"
    sets_fidelity: ClassVar[bool] = True

    def __init__(
        self,
        *,
        problem: Problem,
        seed: int = 0,
        offspring: int = 16,
        survivors: tuple[int, ...] | list[int] = (8, 4, 2, 1),
        stage_steps: tuple[int, ...] | list[int] = (10, 50, 100, 200),
        stage_samples: tuple[int, ...] | list[int] = (512, 1024, 2048, 4096),
        fitness: str = "loss",
        generations: int | None = None,
        max_swaps: int = DARWIN_MAX_SWAPS,
        fresh_draws: bool = False,
        final_draws: int = 1,
        patience: int | None = None,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.offspring = check_int("offspring", offspring, 1)
        self.schedule = Schedule.build(offspring=self.offspring, survivors=survivors, steps=stage_steps,
                                       samples=stage_samples)
        self.fitness_metric = fitness
        self._fitness = fitness_of(fitness)
        self.generations = None if generations is None else check_int("generations", generations, 1)
        self.max_swaps = check_int("max_swaps", max_swaps, 1)
        if not isinstance(fresh_draws, bool):
            raise ValueError(f"fresh_draws must be true or false, got {fresh_draws!r}")
        self.fresh_draws = fresh_draws
        self.final_draws = check_int("final_draws", final_draws, 1)
        self.patience = None if patience is None else check_int("patience", patience, 1)
        self._steps = GridSteps(self.space)
        self.parent: np.ndarray | None = None
        self.parent_result: Result | None = None
        self.generation: Generation | None = None
        self.n_generations = 0
        #: generations in a row whose winner was the parent
        self.kept_parent = 0
        self._seen: set[tuple[int, ...]] = set()

    def _key(self, levels: np.ndarray) -> tuple[int, ...]:
        return tuple(int(k) for k in self.space.kept_counts(levels))

    def _first_parent(self) -> np.ndarray | None:
        uniform = self.problem.least_pruning_uniform()
        if uniform is None:
            return None  # a hand-built limit below the sparsest model: nothing to search
        return fill_steps(self.problem, uniform, self._steps, self.rng)

    def _children(self, parent: np.ndarray) -> list[np.ndarray]:
        children: list[np.ndarray] = []
        for _ in range(self.offspring * REDRAWS):
            if len(children) == self.offspring:
                break
            child = mutate(self.problem, parent, self._steps, self.rng, self.max_swaps)
            if child is None:
                break  # no swap fits the parent: no redraw can help
            if not self.problem.feasible(child)[0]:  # cannot happen with exact swaps; guard
                child = fill_steps(self.problem, repair(self.problem, child, self.rng), self._steps, self.rng)
            key = self._key(child)
            if key in self._seen:
                continue
            self._seen.add(key)
            children.append(child)
        return children

    def _ask(self, n: int) -> list[Proposal]:
        if self.generation is None:
            if self.parent is None:
                self.parent = self._first_parent()
                if self.parent is None:
                    self.finished = True
                    return []
                self._seen.add(self._key(self.parent))
            if self.generations is not None and self.n_generations >= self.generations:
                self.finished = True
                return []
            if self.patience is not None and self.kept_parent >= self.patience:
                logger.info("darwin: the parent won %d generations in a row (patience %d); finished",
                            self.kept_parent, self.patience)
                self.finished = True
                return []
            children = self._children(self.parent)
            if not children and self.parent_result is not None:
                logger.info("darwin: every child of the parent within reach was seen; finished")
                self.finished = True
                return []
            # a parent without children is still scored once (carried through the stages alone);
            # on a fresh draw the parent's old score is not comparable, so it is scored again
            self.generation = Generation(offspring=children, elite_levels=self.parent,
                                         elite_result=None if self.fresh_draws else self.parent_result,
                                         schedule=self.schedule, continued=True, fitness=self._fitness,
                                         draws=self._draws())
        return self.generation.take(n)

    def _tell(self, results: list[Result]) -> None:
        for result in results:
            if self.generation is not None:
                self.generation.record(result)
        if self.generation is not None and self.generation.done:
            winner = self.generation.winner
            if winner is not None:
                self.parent, self.parent_result = winner.levels.copy(), winner.result
                self.kept_parent = self.kept_parent + 1 if winner.elite else 0
            self.generation = None
            self.n_generations += 1

    def generation_trials(self) -> tuple[int, int]:
        """Trials of the first generation and of each later one in the run loop (which
        answers a parent's repeated trials from its cache)."""
        schedule, extra_draws = self.schedule, self.final_draws - 1
        entrants = self.offspring + sum(schedule.survivors[:-1])
        finalists = schedule.survivors[-2] if schedule.n_stages > 1 else self.offspring
        offspring_trials = entrants + finalists * extra_draws
        parent_chain = schedule.n_stages + extra_draws
        return offspring_trials + parent_chain, offspring_trials + (parent_chain if self.fresh_draws else 0)

    def plan(self, trials: int) -> str:
        first, later = self.generation_trials()
        generations = 0 if trials < first else 1 + (trials - first) // later
        if self.generations is not None:
            generations = min(generations, self.generations)
        if generations == 0:
            return (f"darwin: {trials} trials do not finish its first generation ({first} trials; {later} each "
                    f"after), and its choice comes at the end of one: ask for --trials {first} or more")
        plural = "generation" if generations == 1 else "generations"
        bought = f"darwin: {trials} trials buy {generations} whole {plural} ({first} trials the first, {later} each after)"
        if self.patience is not None:
            return f"{bought}, fewer if the parent wins {self.patience} generations in a row"
        return (f"{bought}; DarwinLM's search runs 200, but a parent often stops changing long before: "
                "--searcher-option patience=N stops once it has won N generations in a row")

    def _draws(self) -> tuple[int, ...]:
        """This generation's draws: the same every generation, or new ones with fresh draws."""
        first = self.n_generations * self.final_draws if self.fresh_draws else 0
        return tuple(range(first, first + self.final_draws))

    def live_checkpoints(self) -> set[int]:
        return live_after(self.generation, self.parent_result)

    def incumbent(self) -> int | None:
        return None if self.parent_result is None else self.parent_result.trial_id

    def options(self) -> dict[str, Any]:
        return {**super().options(), "offspring": self.offspring, "survivors": list(self.schedule.survivors),
                "stage_steps": list(self.schedule.steps), "stage_samples": list(self.schedule.samples),
                "fitness": self.fitness_metric, "generations": self.generations, "max_swaps": self.max_swaps,
                "fresh_draws": self.fresh_draws, "final_draws": self.final_draws, "patience": self.patience}
