"""``tyr``: Týr-the-Pruner's coarse-to-fine sparsity search (Li et al., 2025, arXiv:2503.09657).

"Týr-the-Pruner: Unlocking Accurate 50% Structural Pruning for LLMs via Global Sparsity
Distribution Optimization" (NeurIPS 2025 as "...: Structural Pruning LLMs via Global
Sparsity Distribution Optimization") prunes every layer at a few sparsities around a
centre (a *supernet*), searches which one each layer takes under the overall target by
evolution with a cheap, training-free fitness, then re-centres every layer on the best
found and halves the spacing:

- Window: each group may take the centre level ± ``window`` steps (9 levels by default,
  ``--num_sparsity_levels 9`` in the authors' released ``script/example.sh``).
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
- ``stage_steps`` (not in the paper, off by default): cumulative retraining steps per
  stage, survivors continuing their trials as in ``darwin``. Týr prunes LLMs at 50%,
  where the pruned model still works; at extreme sparsity a pruned CNN's predictions
  right after pruning say nothing of what it retrains to (Kendall tau about 0 against
  long retraining in ``experiments/results/proxy_fidelity*.md``), and training-free tyr
  fell 3 points below uniform on resnet20 at flops=0.05
  (``searcher_comparison_resnet20.md``). Short retraining per stage is what ranks there.

Steps are counted in *grid levels*: a round steps ``max(1, round(ratio / level_step))``
levels, where ``level_step`` is the grid's (median) spacing of keep ratios. The default
grid (``level_step: 0.0625``) therefore steps 2, 1, 1, 1 levels: it is coarser than the
paper's last two rounds, which then repeat the one-level search around the re-centred
best: more generations at the grid's resolution, not a finer one. Give the search space
``level_step: 0.015625`` (in its YAML) for the paper's full 8, 4, 2, 1 levels.

Defaults scaled from the released ``script/example.sh`` (128 offspring, survivors 16,
4, 2 on 2048, 16384, 131072 tokens, 50 generations per round) to short runs: 16
offspring, survivors 4, 2, 1 on 256, 1024, 4096 held-out samples, 5 generations per
round. A generation costs ``offspring + sum(survivors[:-1])`` trials (22), plus one the
first time to score the first parent; 4 rounds of 5 are 441 trials. Týr's cache of
pruned weights per group and level (its supernet) is the evaluator's business: the
searcher only names levels.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.mutation import TYR_MAX_SWAPS, fill_steps, mutate
from autoprune.searchers.staged import Generation, Schedule, check_int, fitness_of, live_after
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

#: redraws allowed per offspring place before a generation makes do with fewer children
REDRAWS = 10


def grid_spacing(space: SearchSpace) -> float:
    """The grid's typical step between neighbouring keep ratios."""
    return float(np.median(-np.diff(np.asarray(space.grid.keep_ratios, dtype=float))))


def round_step(space: SearchSpace, coarse_step: float, round_index: int) -> int:
    """Grid levels per window step in round ``round_index`` (0-based): halving, at least 1."""
    return max(1, int(round(coarse_step / 2**round_index / grid_spacing(space))))


class WindowSteps:
    """Steps of ``step`` grid levels, at most ``window`` steps either side of ``centre``.

    A step that keeps the same number of channels (a rounding plateau) is no step: it
    would only rename the model. Targets are tabulated once per round for every group
    and level, so a step is a table lookup.
    """

    def __init__(self, space: SearchSpace, centre: np.ndarray, step: int, window: int) -> None:
        self.centre = np.array(centre, dtype=np.int64)
        self.step, self.window = step, window
        kept = np.array([g.kept for g in space.groups], dtype=np.int64)  # (G, L)
        n_groups, n_levels = kept.shape
        levels = np.broadcast_to(np.arange(n_levels), kept.shape)
        offset = (levels - self.centre[:, None]) // step
        rows = np.arange(n_groups)[:, None]
        up, down = levels + step, levels - step
        up_ok = (offset < window) & (up < n_levels)
        up_ok &= kept[rows, np.minimum(up, n_levels - 1)] < kept
        down_ok = (offset > -window) & (down >= 0)
        down_ok &= kept[rows, np.maximum(down, 0)] > kept
        self._up, self._down = np.where(up_ok, up, -1), np.where(down_ok, down, -1)
        self._rows = np.arange(n_groups)

    def offsets(self, levels: np.ndarray) -> np.ndarray:
        return (np.asarray(levels) - self.centre) // self.step

    def __call__(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._up[self._rows, levels], self._down[self._rows, levels]


class TyrSearcher(Searcher):
    name = "tyr"
    batch_size: ClassVar[int] = 32
    keeps_choice: ClassVar[bool] = True
    choice_after: ClassVar[str] = "the end of its first selection"
    sets_fidelity: ClassVar[bool] = True

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
        stage_steps: tuple[int, ...] | list[int] | None = None,
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
        self.schedule = Schedule.build(offspring=self.offspring, survivors=survivors,
                                       steps=(0,) * n_stages if stage_steps is None else stage_steps,
                                       samples=stage_samples)
        #: retraining stages continue their survivors' trials, as DarwinLM's do
        self.continued = any(self.schedule.steps)
        self.keeps_checkpoints = self.continued
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
        uniform = self.problem.least_pruning_uniform()
        if uniform is None:
            return False
        self.steps = WindowSteps(self.space, uniform, round_step(self.space, self.coarse_step, 0), self.window)
        self.parent = fill_steps(self.problem, uniform, self.steps, self.rng)
        self._seen.add(self._key(self.parent))
        return True

    def _next_round(self) -> None:
        """Re-centre every group on the best so far and halve the step."""
        self.round += 1
        self.generations_done = 0
        if self.round < self.rounds and self.parent is not None:
            step = round_step(self.space, self.coarse_step, self.round)
            self.steps = WindowSteps(self.space, self.parent, step, self.window)
            logger.info("tyr: round %d of %d, step %d grid levels", self.round + 1, self.rounds, step)

    def _children(self) -> list[np.ndarray]:
        assert self.parent is not None and self.steps is not None
        children: list[np.ndarray] = []
        for _ in range(self.offspring * REDRAWS):
            if len(children) == self.offspring:
                break
            child = mutate(self.problem, self.parent, self.steps, self.rng, self.max_swaps)
            if child is None:
                break  # no swap fits the parent: no redraw can help
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
            if not children and self.parent_result is not None:  # the window around the parent is exhausted
                self._next_round()
                continue
            # a first parent without children is still scored (at the last stage, or carried
            # through retraining stages)
            self.generation = Generation(offspring=children, elite_levels=self.parent,  # type: ignore[arg-type]
                                         elite_result=self.parent_result, schedule=self.schedule,
                                         continued=self.continued, fitness=self._fitness)
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

    def plan(self, trials: int) -> str:
        per_generation = self.offspring + sum(self.schedule.survivors[:-1])
        first_parent = self.schedule.n_stages if self.continued else 1  # carried through the stages, or scored once
        needed = self.rounds * self.generations_per_round * per_generation + first_parent
        return (f"tyr: its {self.rounds} rounds of {self.generations_per_round} generations take about {needed} "
                f"trials ({per_generation} per generation); --trials {trials} "
                + ("covers them" if trials >= needed else "stops it early, raise it for every round"))

    def live_checkpoints(self) -> set[int]:
        return live_after(self.generation, self.parent_result)

    def incumbent(self) -> int | None:
        return None if self.parent_result is None else self.parent_result.trial_id

    def window_levels(self) -> list[tuple[int, ...]] | None:
        """Per group, the levels the current round may propose (None before the first ask).

        A hint for an evaluator that caches pruned weights per group and level (Týr's
        supernet): what to prepare when a round starts and what it may drop after.
        """
        if self.steps is None:
            return None
        n_levels = self.space.n_levels
        offsets = np.arange(-self.window, self.window + 1) * self.steps.step
        return [tuple(int(v) for v in c + offsets if 0 <= v < n_levels) for c in self.steps.centre]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "rounds": self.rounds, "window": self.window, "coarse_step": self.coarse_step,
                "generations_per_round": self.generations_per_round, "offspring": self.offspring,
                "survivors": list(self.schedule.survivors), "stage_samples": list(self.schedule.samples),
                "stage_steps": list(self.schedule.steps),
                "fitness": self.fitness_metric, "max_swaps": self.max_swaps}
