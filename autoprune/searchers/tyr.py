"""``tyr``: Týr-the-Pruner's coarse-to-fine sparsity-distribution search (Li et al., 2025).

"Týr-the-Pruner: Structural Pruning LLMs via Global Sparsity Distribution Optimization"
prunes every layer at a few sparsities around a centre (a *supernet*), searches which
one each layer takes under the overall target by evolution with a cheap, training-free
fitness, then re-centres every layer on the best found and halves the spacing:

- Window: each group may take the centre level ± ``window`` steps (9 levels by default,
  the paper's ``num_sparsity_levels 9``).
- Rounds: ``rounds`` (4) rounds; round ``r`` steps ``coarse_step / 2**r`` of a group's
  units (12.5%, 6.25%, 3.125%, 1.5625%, the paper's schedule). Round 1 is centred on
  the least-pruning uniform level that meets the budget (the parent starts there, given
  back leftover budget in window steps); each later round re-centres on the best.
- Search within a round: ``generations_per_round`` generations of (1 + λ) evolution;
  children are the parent after min(U{1..4}, U{1..4}) swaps (the released script's
  draw) of one window step, drawn by the cost model so the budget holds nearly exactly
  (:mod:`autoprune.searchers.mutation`).
- Fitness: ``kl_to_dense``, the KL divergence of the dense model's predictions to the
  candidate's, with no retraining (``fidelity=0``; the evaluator still recalibrates
  BatchNorm statistics), in stages on growing scoring data like DarwinLM's
  (:mod:`autoprune.searchers.staged`); the parent joins the last stage.

Steps are counted in *grid levels*: a round steps ``max(1, round(ratio / level_step))``
levels, where ``level_step`` is the grid's (median) spacing of keep ratios. The default
grid (``level_step: 0.0625``) therefore steps 2, 1, 1, 1 levels: it is coarser than the
paper's last two rounds, which then repeat the finest search (1 level) around the
re-centred best, a finer local search but not a finer grid. Give the search space a
``level_step: 0.015625`` (in its YAML) for the paper's full 8, 4, 2, 1 levels.

Defaults scaled from the released ``script/example.sh`` (128 offspring, survivors 16,
4, 2 on 2048, 16384, 131072 tokens, 50 generations per round) to short runs: 16
offspring, survivors 4, 2, 1 on 256, 1024, 4096 held-out samples, 5 generations.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.mutation import TYR_MAX_SWAPS, fill_steps, mutate
from autoprune.searchers.staged import Generation, Schedule, check_int, fitness_of
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

#: redraws allowed per offspring place before a generation makes do with fewer children
REDRAWS = 20


def grid_spacing(space: SearchSpace) -> float:
    """The grid's typical step between neighbouring keep ratios."""
    return float(np.median(-np.diff(np.asarray(space.grid.keep_ratios, dtype=float))))


def round_step(space: SearchSpace, coarse_step: float, round_index: int) -> int:
    """Grid levels per window step in round ``round_index`` (0-based): halving, at least 1."""
    return max(1, int(round(coarse_step / 2**round_index / grid_spacing(space))))


class WindowSteps:
    """Steps of ``step`` grid levels, at most ``window`` steps either side of ``centre``."""

    def __init__(self, centre: np.ndarray, step: int, window: int, n_levels: int) -> None:
        self.centre = np.array(centre, dtype=np.int64)
        self.step, self.window, self.n_levels = step, window, n_levels

    def offsets(self, levels: np.ndarray) -> np.ndarray:
        return (np.asarray(levels) - self.centre) // self.step

    def __call__(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offset = self.offsets(levels)
        up, down = levels + self.step, levels - self.step
        up = np.where((offset < self.window) & (up < self.n_levels), up, -1)
        down = np.where((offset > -self.window) & (down >= 0), down, -1)
        return up, down


class TyrSearcher(Searcher):
    name = "tyr"
    batch_size: ClassVar[int] = 32

    def __init__(
        self,
        *,
        problem: Problem,
        seed: int = 0,
        rounds: int = 4,
        window: int = 4,
        coarse_step: float = 0.125,
        generations_per_round: int = 5,
        offspring: int = 16,
        survivors: tuple[int, ...] | list[int] = (4, 2, 1),
        stage_samples: tuple[int, ...] | list[int] = (256, 1024, 4096),
        fitness: str = "kl_to_dense",
        max_swaps: int = TYR_MAX_SWAPS,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.rounds = check_int("rounds", rounds, 1)
        self.window = check_int("window", window, 1)
        if isinstance(coarse_step, bool) or not isinstance(coarse_step, (int, float)) or not 0 < coarse_step < 1:
            raise ValueError(f"coarse_step must be a fraction of a group's units in (0, 1), got {coarse_step!r}")
        self.coarse_step = float(coarse_step)
        self.generations_per_round = check_int("generations_per_round", generations_per_round, 1)
        self.offspring = check_int("offspring", offspring, 1)
        n_stages = len(survivors) if isinstance(survivors, (list, tuple)) else 1
        self.schedule = Schedule.build(offspring=self.offspring, survivors=survivors, steps=(0,) * n_stages,
                                       samples=stage_samples)
        self.fitness_metric = fitness
        self._fitness = fitness_of(fitness)
        self.max_swaps = check_int("max_swaps", max_swaps, 1)
        self.round = 0
        self.steps: WindowSteps | None = None
        self.parent: np.ndarray | None = None
        self.parent_result: Result | None = None
        self.generation: Generation | None = None
        self.generations_done = 0  # in the current round
        self._seen: set[tuple[int, ...]] = set()

    def _key(self, levels: np.ndarray) -> tuple[int, ...]:
        return tuple(int(k) for k in self.space.kept_counts(levels))

    def _start(self) -> bool:
        """Round 1: centre on the least-pruning uniform level that fits; False if none does."""
        for level in range(self.space.n_levels):
            uniform = self.space.uniform_candidate(level)
            if self.problem.feasible(uniform)[0]:
                self.steps = WindowSteps(uniform, round_step(self.space, self.coarse_step, 0), self.window,
                                         self.space.n_levels)
                self.parent = fill_steps(self.problem, uniform, self.steps, self.rng)
                self._seen.add(self._key(self.parent))
                return True
        return False

    def _next_round(self) -> None:
        """Re-centre every group on the best so far and halve the step."""
        self.round += 1
        self.generations_done = 0
        if self.round < self.rounds and self.parent is not None:
            step = round_step(self.space, self.coarse_step, self.round)
            self.steps = WindowSteps(self.parent, step, self.window, self.space.n_levels)
            logger.info("tyr: round %d of %d, step %d grid levels", self.round + 1, self.rounds, step)

    def _children(self) -> list[np.ndarray]:
        assert self.parent is not None and self.steps is not None
        children: list[np.ndarray] = []
        for _ in range(self.offspring * REDRAWS):
            if len(children) == self.offspring:
                break
            child = mutate(self.problem, self.parent, self.steps, self.rng, self.max_swaps)
            if child is None:
                continue
            key = self._key(child)
            if key in self._seen:
                continue
            self._seen.add(key)
            children.append(child)
        return children

    def _ask(self, n: int) -> list[Proposal]:
        if self.parent is None and not self._start():
            self.finished = True
            return []
        while self.generation is None:
            if self.round >= self.rounds:
                self.finished = True
                return []
            if self.generations_done >= self.generations_per_round:
                self._next_round()
                continue
            children = self._children()
            if not children:  # the window around the parent is exhausted
                self._next_round()
                continue
            self.generation = Generation(offspring=children, elite_levels=self.parent,  # type: ignore[arg-type]
                                         elite_result=self.parent_result, schedule=self.schedule,
                                         continued=False, fitness=self._fitness)
        return self.generation.take(n)

    def _tell(self, results: list[Result]) -> None:
        for result in results:
            if self.generation is not None:
                self.generation.record(result)
        if self.generation is not None and self.generation.done:
            winner = self.generation.winner
            if winner is not None:
                self.parent, self.parent_result = winner.levels.copy(), winner.result
            self.generation = None
            self.generations_done += 1

    def options(self) -> dict[str, Any]:
        return {**super().options(), "rounds": self.rounds, "window": self.window, "coarse_step": self.coarse_step,
                "generations_per_round": self.generations_per_round, "offspring": self.offspring,
                "survivors": list(self.schedule.survivors), "stage_samples": list(self.schedule.samples),
                "fitness": self.fitness_metric, "max_swaps": self.max_swaps}
