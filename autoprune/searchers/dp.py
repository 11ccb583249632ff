"""``dp``: layer budgets by dynamic programming over per-group distortion curves.

Xu et al., "Efficient Joint Optimization of Layer-Adaptive Weight Pruning in Deep Neural
Networks" (ICCV 2023, arXiv:2308.10438) measure, for every layer and every pruning
level, how far pruning *only that layer* moves the network's output from the dense
model's on a calibration batch, assume the distortions of several layers add up, and
pick the levels with least total distortion under the budget by dynamic programming.
No training is needed to search.

As built here:

- Curves: one *measurement* (:data:`~autoprune.searchers.base.MEASUREMENT`) per group and
  distinct kept count, the group at that level and every other dense, scored with no
  retraining (``fidelity=0``; the evaluator still recalibrates BatchNorm statistics) on
  ``calibration_samples`` held-out samples, plus one of the dense model, whose
  distortion (the recalibration's own) is subtracted. Probes are over budget by design:
  the budget check exempts measurements, the journal keeps them (a resume replays them),
  the front never shows them, and they do not count against ``--trials``. They run on
  the executor's workers like any trial.
- Distortion: ``kl`` (KL divergence of the dense model's predictions to the pruned
  one's, ``kl_to_dense``), ``mse`` (mean squared error of the logits, ``mse_to_dense``)
  or ``worst_mse`` (the largest per-sample MSE, the paper code's worst-case option).
- Additivity check: ``additivity_checks`` random multi-group candidates (from mild to
  severe) are measured the same way; the Spearman rank correlation of their measured
  distortion with the sum of their groups' curves is in the run's report and summary.
- Allocation: exact DP under every bounded resource with the coupling between
  neighbouring groups (:mod:`autoprune.searchers.dp_solver`). One solve answers every
  budget below the requested one, so the searcher proposes the allocation at each of
  ``budget_fractions`` of the limits: one run gives a front. They are trials, retrained
  at the run's ``--fidelity`` and scored like any other.

- Rounds (``rounds``, default 1: one-shot): the paper's iterative mode. Round ``r`` of
  ``R`` measures the curves on the model round ``r - 1`` pruned and fine-tuned (round 1:
  the dense model): every probe and the baseline name that trial as ``parent``, so the
  evaluator narrows its trained weights to the probe's levels (BatchNorm recalibrated)
  instead of pruning the dense model. Only levels at least as deep as that model's can be
  chosen (its channels are gone: curves are infinite above them, 0 at them). An
  intermediate round allocates for the budget ``dense · (limit / dense) ** (r / R)`` of
  every bounded resource (geometric: each round removes the same fraction of what is
  left, from dense to the target), and proposes that one allocation, continuing the last
  round's model and retrained ``round_steps`` steps (default: the run's ``--fidelity``),
  as a *measurement*: it is over the final budget by design, so it is journaled and
  replayed but never on the front. The last round proposes the requested budget's
  allocations (and the spread below it) as trials that continue the last intermediate
  model, retrained at the run's ``--fidelity``; their ``total_steps`` count the rounds'
  fine-tuning. The additivity check runs in the last round, on its model.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import numpy as np
from scipy.stats import spearmanr

from autoprune.searchers.base import MEASUREMENT, Problem, Proposal, Result, Searcher
from autoprune.searchers.dp_solver import CouplingTooWide, DPSolution, problem_costs, solve

logger = logging.getLogger(__name__)

#: the distortion measures and the metric of a result that holds each
DISTORTIONS = {"kl": "kl_to_dense", "mse": "mse_to_dense", "worst_mse": "worst_mse_to_dense"}
DEFAULT_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


class DPSearcher(Searcher):
    name = "dp"
    batch_size: ClassVar[int] = 16

    def __init__(
        self,
        *,
        problem: Problem,
        seed: int = 0,
        distortion: str = "kl",
        calibration_samples: int = 512,
        additivity_checks: int = 8,
        budget_fractions: tuple[float, ...] | list[float] = DEFAULT_FRACTIONS,
        buckets: int = 2000,
        rounds: int = 1,
        round_steps: int | None = None,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        if distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {', '.join(DISTORTIONS)}, got {distortion!r}")
        self.distortion = distortion
        self.metric = DISTORTIONS[distortion]
        for what, value, least in (("calibration_samples", calibration_samples, 1),
                                   ("additivity_checks", additivity_checks, 0), ("buckets", buckets, 1),
                                   ("rounds", rounds, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{what} must be a whole number >= {least}, got {value!r}")
        if round_steps is not None and (isinstance(round_steps, bool) or not isinstance(round_steps, (int, np.integer))
                                        or round_steps < 0):
            raise ValueError(f"round_steps must be a whole number >= 0 or null (the run's --fidelity), "
                             f"got {round_steps!r}")
        self.calibration_samples = int(calibration_samples)
        self.additivity_checks = int(additivity_checks)
        self.buckets = int(buckets)
        self.rounds = int(rounds)
        self.round_steps = None if round_steps is None else int(round_steps)
        #: the rounds continue each other's trained weights, which the run must keep
        self.keeps_checkpoints = self.rounds > 1
        fractions = list(budget_fractions) if isinstance(budget_fractions, (list, tuple)) else None
        if (not fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1
                                 for f in fractions)):
            raise ValueError(f"budget_fractions must be a non-empty list of fractions in (0, 1], got {budget_fractions!r}")
        self.budget_fractions = sorted({float(f) for f in fractions}, reverse=True)
        self._kept = np.array([g.kept for g in self.space.groups], dtype=np.int64)
        dense = self.space.uniform_candidate(0)
        self._dense_usage = {r: float(v[0]) for r, v in self.problem.constraints.usage(self.space, dense).items()}
        self._round = 0
        self._base: int | None = None  # trial id of the model this round measures on (None: dense)
        self._base_levels = dense
        self._probes = self._probes_of(self._base_levels)
        self._queue: list[Proposal] = []
        self._phase = "start"
        self._outstanding = 0
        self._probe_values: dict[int, float] = {}  # probe index -> measured distortion (failed: inf)
        self._probe_ids: list[int] = []
        self._baseline: float | None = None
        self._checks: list[np.ndarray] = []
        self._check_values: list[float] = []
        self._step: Result | None = None
        self.curves: np.ndarray | None = None
        self.solution: DPSolution | None = None
        self._report: dict[str, Any] = {}
        self._rounds_report: list[dict[str, Any]] = []
        self._warned = False

    def _probes_of(self, base: np.ndarray) -> list[tuple[int, int]]:
        """(group, level) of each probe on a model at ``base``: the first level of every
        distinct kept count below the one ``base`` keeps."""
        kept = self._kept
        return [(g, level) for g in range(self.space.n_groups) for level in range(int(base[g]) + 1, self.space.n_levels)
                if kept[g, level] not in kept[g, :level]]

    def round_limits(self, round_index: int) -> dict[str, float]:
        """The limits round ``round_index`` (0-based) allocates for: geometric from dense to
        the requested limits, which the last round meets."""
        limits = self.problem.constraints.limits
        if round_index >= self.rounds - 1:
            return dict(limits)
        t = (round_index + 1) / self.rounds
        return {r: self._dense_usage[r] * (v / self._dense_usage[r]) ** t if self._dense_usage[r] > 0 else v
                for r, v in limits.items()}

    # -- proposals ---------------------------------------------------------------------
    def _measurement(self, levels: np.ndarray) -> Proposal:
        return Proposal(levels=levels, fidelity=0, eval_samples=self.calibration_samples, parent=self._base,
                        kind=MEASUREMENT)

    @property
    def _last_round(self) -> bool:
        return self._round == self.rounds - 1

    def _ask(self, n: int) -> list[Proposal]:
        if not self._queue and self._outstanding == 0:
            self._advance()
        if not self._queue:
            self.finished = True
            return []
        taken, self._queue = self._queue[:n], self._queue[n:]
        self._outstanding += len(taken)
        return taken

    def _advance(self) -> None:
        """Fill the queue with the next phase's proposals (all of the last one are told)."""
        if self._phase == "start":
            self._start_round()
        elif self._phase == "probes":
            self._build_curves()
            if self._last_round:
                self._phase = "allocations"
                self._queue = self._additivity_proposals() + self._allocations()
            else:
                self._queue = self._round_step()
                self._phase = "step" if self._queue else "done"
        elif self._phase == "step":
            step = self._step
            if step is None or not step.ok:
                self._report["error"] = (f"the round {self._round + 1} allocation failed to retrain "
                                         f"({'not told' if step is None else step.error}); no later round runs")
                logger.error("dp: %s", self._report["error"])
                self._phase = "done"
                return
            self._rounds_report[-1]["trial_id"] = step.trial_id
            self._round += 1
            self._base, self._base_levels = step.trial_id, np.asarray(step.levels, dtype=np.int64).copy()
            self._probes = self._probes_of(self._base_levels)
            self._start_round()
        else:
            self._phase = "done"

    def _start_round(self) -> None:
        self._phase = "probes"
        self._probe_values, self._probe_ids = {}, []
        self._step = None
        self._queue = [self._measurement(self._base_levels.copy())]
        for g, level in self._probes:
            levels = self._base_levels.copy()
            levels[g] = level
            self._queue.append(self._measurement(levels))

    def _round_step(self) -> list[Proposal]:
        """The intermediate round's allocation, to be retrained and measured on next round."""
        limits = self.round_limits(self._round)
        entry: dict[str, Any] = {"round": self._round + 1, "limits": limits, "parent": self._base}
        self._rounds_report.append(entry)
        found = self._solve(limits)
        if found is None:
            self._report.setdefault("error", f"no allocation meets the round {self._round + 1} limits")
            return []
        levels = np.maximum(found, self._base_levels)  # a plateau level above the base keeps the same channels
        entry["levels"] = levels.tolist()
        return [Proposal(levels=levels, fidelity=self.round_steps, parent=self._base, kind=MEASUREMENT)]

    def _solve(self, limits: dict[str, float]) -> np.ndarray | None:
        """Solve for ``limits`` on this round's curves; the allocation at them (None: none)."""
        assert self.curves is not None
        started = time.perf_counter()
        try:
            self.solution = solve(self.curves, problem_costs(self.problem), limits, buckets=self.buckets)
        except CouplingTooWide as exc:
            logger.error("dp: %s; no allocation is proposed", exc)
            self._report["error"] = str(exc)
            return None
        self._report["solve_seconds"] = self._report.get("solve_seconds", 0.0) + time.perf_counter() - started
        self._report["frontier"] = self.solution.frontier
        found = self.solution.allocate(limits)
        return None if found is None else found[0]

    def _additivity_proposals(self) -> list[Proposal]:
        """Random candidates from mild to severe, each pruning several groups further than
        this round's model."""
        n_groups, n_levels = self.space.n_groups, self.space.n_levels
        base = self._base_levels
        deeper = np.flatnonzero(base < n_levels - 1)
        if len(deeper) < 2:
            return []
        proposals = []
        for k in range(self.additivity_checks):
            top = max(1, int(round((k + 1) / self.additivity_checks * (n_levels - 1))))
            levels = np.maximum(self.rng.integers(0, top + 1, size=n_groups), base)
            while np.count_nonzero(levels > base) < 2:
                g = int(deeper[self.rng.integers(0, len(deeper))])
                levels[g] = self.rng.integers(int(base[g]) + 1, max(top, int(base[g]) + 1) + 1)
            self._checks.append(levels.astype(np.int64))
            proposals.append(self._measurement(levels.astype(np.int64)))
        return proposals

    def _allocations(self) -> list[Proposal]:
        if self._solve(self.problem.constraints.limits) is None:
            return []
        assert self.solution is not None
        proposals, seen = [], set()
        for fraction in self.budget_fractions:
            limits = {r: v * fraction for r, v in self.problem.constraints.limits.items()}
            found = self.solution.allocate(limits)
            if found is None:
                continue
            levels = np.maximum(found[0], self._base_levels)
            key = tuple(self.space.kept_counts(levels).tolist())
            if key in seen:
                continue
            if not self.problem.feasible(levels)[0]:  # never expected: the DP rounds costs up
                logger.error("dp: the allocation at %.2f of the budget is over it; skipped", fraction)
                continue
            seen.add(key)
            proposals.append(Proposal(levels=levels, parent=self._base))
        if not proposals:
            logger.warning("dp: no allocation meets the budget with the measured curves")
        return proposals

    # -- results -----------------------------------------------------------------------
    def _value(self, result: Result) -> float:
        if not result.ok:
            return float("inf")
        value = result.metrics.get(self.metric)
        if value is None or not np.isfinite(value):
            if not self._warned:
                logger.warning("dp: a measurement has no %s (distortion %r); is it measured for this model?",
                               self.metric, self.distortion)
                self._warned = True
            return float("inf")
        return float(value)

    def _tell(self, results: list[Result]) -> None:
        for result in results:
            self._outstanding -= 1
            if self._phase == "probes":
                self._probe_ids.append(result.trial_id)
                self._probe_values[len(self._probe_ids) - 1] = self._value(result)
            elif self._phase == "step":
                self._step = result
            elif self._phase == "allocations" and result.kind == MEASUREMENT:
                self._check_values.append(self._value(result))
        self._outstanding = max(self._outstanding, 0)
        if (self._phase == "allocations" and "additivity" not in self._report
                and len(self._check_values) >= len(self._checks)):
            self._check_additivity()

    def _build_curves(self) -> None:
        """Distortion per group and level from this round's probes, relative to its model
        (plateau levels share a probe's; levels that keep channels the model lost: inf)."""
        values = [self._probe_values.get(i, float("inf")) for i in range(len(self._probes) + 1)]
        baseline = values[0] if np.isfinite(values[0]) else 0.0
        self._baseline = baseline
        curves = np.full(self._kept.shape, np.inf)
        measured = {(g, int(self._kept[g, level])): v - baseline
                    for (g, level), v in zip(self._probes, values[1:])}
        for g in range(self.space.n_groups):
            here = int(self._kept[g, self._base_levels[g]])
            for level in range(self.space.n_levels):
                kept = int(self._kept[g, level])
                if kept == here:
                    curves[g, level] = 0.0
                elif kept < here:
                    curves[g, level] = measured.get((g, kept), np.inf)
        self.curves = np.maximum(curves, 0.0)  # below the model's own distortion counts as none
        failed = int(np.sum(~np.isfinite(values)))
        self._report["probes"] = self._report.get("probes", 0) + len(values)
        self._report["failed_probes"] = self._report.get("failed_probes", 0) + failed
        self._report.update({"distortion": self.distortion, "baseline": baseline,
                             "curves": [[v if np.isfinite(v) else None for v in row] for row in self.curves.tolist()]})

    def _check_additivity(self) -> None:
        assert self.curves is not None
        predicted = [float(self.curves[np.arange(self.space.n_groups), c].sum()) for c in self._checks]
        measured = [v - (self._baseline or 0.0) for v in self._check_values[: len(self._checks)]]
        pairs = [(p, m) for p, m in zip(predicted, measured) if np.isfinite(p) and np.isfinite(m)]
        rho = None
        if len(pairs) >= 3 and len({p for p, _ in pairs}) > 1 and len({m for _, m in pairs}) > 1:
            rho = float(spearmanr([p for p, _ in pairs], [m for _, m in pairs]).statistic)
        self._report["additivity"] = {"spearman": rho, "checked": len(pairs), "predicted": predicted,
                                      "measured": [m if np.isfinite(m) else None for m in measured]}

    def live_checkpoints(self) -> set[int] | None:
        """Only the model the current round continues (and, once told, the next one)."""
        if not self.keeps_checkpoints:
            return None
        live = set() if self._base is None or self._phase == "done" else {self._base}
        if self._step is not None and self._step.ok:
            live.add(self._step.trial_id)
        return live

    # -- what the rest of autoprune reads ----------------------------------------------
    def plan(self, trials: int) -> str:
        n_alloc = len(self.budget_fractions)
        rounds = ("" if self.rounds == 1 else
                  f" in the first of {self.rounds} rounds (each later round measures again on the last round's "
                  "retrained allocation, itself a measurement)")
        return (f"dp: {len(self._probes) + 1} probes{rounds} and {self.additivity_checks} additivity checks "
                f"(measurements, not counted in --trials), then up to {n_alloc} allocations (one per budget fraction)"
                + ("" if trials >= n_alloc else f"; --trials {trials} keeps only the first {trials}"))

    def report(self) -> dict[str, Any]:
        if not self._report:
            return {}
        summary = [f"dp: {self._report.get('probes', 0)} probes of {self.distortion} distortion on "
                   f"{self.calibration_samples} held-out samples ({self._report.get('failed_probes', 0)} failed)"]
        if "solve_seconds" in self._report:
            summary.append(f"dp: solved in {self._report['solve_seconds']:.3f} s (frontier of "
                           f"{self._report['frontier']} groups)")
        check = self._report.get("additivity")
        if check is not None:
            rho = check["spearman"]
            summary.append(f"additivity check: Spearman {rho:.2f} between summed curves and measured distortion "
                           f"over {check['checked']} multi-group candidates" if rho is not None else
                           f"additivity check: too few measured candidates ({check['checked']}) for a rank correlation")
        for entry in self._rounds_report:
            limits = ", ".join(f"{r}<={v / self._dense_usage[r]:.3f} of dense" if self._dense_usage[r] > 0
                               else f"{r}<={v:.6g}" for r, v in entry["limits"].items())
            summary.append(f"dp: round {entry['round']} of {self.rounds} allocated for {limits}"
                           + (f", retrained as measurement {entry['trial_id']}" if "trial_id" in entry else ""))
        if "error" in self._report:
            summary.append(f"dp: {self._report['error']}")
        rounds = {"rounds": list(self._rounds_report)} if self._rounds_report else {}
        return {**self._report, **rounds, "summary": summary}

    def options(self) -> dict[str, Any]:
        return {**super().options(), "distortion": self.distortion, "calibration_samples": self.calibration_samples,
                "additivity_checks": self.additivity_checks, "budget_fractions": list(self.budget_fractions),
                "buckets": self.buckets, "rounds": self.rounds, "round_steps": self.round_steps}
