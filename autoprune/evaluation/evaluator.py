"""Score one candidate: materialise, recalibrate BatchNorm, retrain briefly, measure.

Quality is measured on the held-out slice of the training data; the test split is left
for reports and export. Every candidate is retrained with the same seed (common random
numbers), so differences between candidates come from the allocation, not the shuffle.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from autoprune.data.base import TaskData
from autoprune.evaluation.allocator import keep_freed_memory
from autoprune.evaluation.features import FeatureDistortion
from autoprune.evaluation.latency import measure_latency
from autoprune.evaluation.training import (
    TeacherCache,
    TrainConfig,
    predict,
    recalibrate_batchnorm,
    resolve_placement,
    score,
    train,
)
from autoprune.space.counting import count
from autoprune.space.level_database import LevelDatabase, UnsupportedModel
from autoprune.space.materialize import Importance, materialize, prune_to_indices
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)

#: the most teacher logits (training samples x classes) an evaluator keeps: 200 MB of float32
#: (beyond it, e.g. ImageNet's 1.28 M images x 1000 classes, the teacher runs every step)
MAX_CACHED_LOGITS = 50_000_000


class EvaluationFailed(Exception):
    """The candidate could not be scored (diverged, out of memory, could not be built)."""


#: how measurements may retrain (``EvaluatorConfig.measurement_training``)
MEASUREMENT_TRAININGS = ("task", "features")


@dataclass(frozen=True)
class EvaluatorConfig:
    """How a candidate is scored; ``fidelity`` is the default number of retraining steps."""

    fidelity: int = 100
    bn_batches: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)
    latency_batch_size: int = 1
    latency_repeats: int = 20
    measure_latency: bool = True
    #: "auto" (CUDA when present, else CPU), "cpu" or "cuda[:N]"
    device: str = "auto"
    #: bfloat16 autocast and channels-last memory format; None = on for CUDA, off on CPU
    amp: bool | None = None
    channels_last: bool | None = None
    #: assemble candidates from pruned weights cached per group and level (Týr's supernet)
    #: instead of pruning the dense model again each time; exact, so only speed differs
    level_database: bool = True
    #: remember the dense model's logits per training sample (see ``TeacherCache``) instead
    #: of a dense forward pass per step; the same targets up to float rounding
    cache_teacher_logits: bool = True
    #: also report ``feature_distortion:<boundary>`` at every stage boundary (see
    #: :mod:`autoprune.evaluation.features`; one more pass of the dense and the pruned
    #: model over the scored samples), for searchers that divide the network (``emo-pms``)
    feature_distortion: bool = False
    #: measure it only at the boundaries of this many runs of consecutive stages, the ones the
    #: searcher reads (``StageSplit.merged``; None: at every stage boundary)
    feature_sub_networks: int | None = None
    #: how a searcher's measurements retrain their ``fidelity`` steps: ``task`` as trials do,
    #: or ``features``, mimicking the dense features at the pruned stages' boundaries
    #: (:meth:`~autoprune.evaluation.features.FeatureDistortion.mimic`; EMO-PMS's optional
    #: training), which needs ``feature_distortion``
    measurement_training: str = "task"

    def __post_init__(self) -> None:
        if self.measurement_training not in MEASUREMENT_TRAININGS:
            raise ValueError(f"measurement_training must be one of {list(MEASUREMENT_TRAININGS)}, "
                             f"got {self.measurement_training!r}")
        if self.measurement_training == "features" and not self.feature_distortion:
            raise ValueError("measurement_training 'features' needs feature_distortion, which defines the features")
        if self.fidelity < 0:
            raise ValueError(f"fidelity must be >= 0 retraining steps, got {self.fidelity}")
        if self.bn_batches < 0:
            raise ValueError(f"bn_batches must be >= 0, got {self.bn_batches}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """Held-out metrics while a candidate retrains, for schedulers that stop poor candidates
    early (Ray Tune's ASHA, Optuna's pruners): ``report(steps_done, scores)`` every ``every``
    steps before the last (the last is the evaluation's own result), scored as the final
    metrics are (``accuracy``, ``loss``, ``kl_to_dense`` on the evaluation's held-out
    samples). Scoring runs in eval mode without drawing random numbers, so a candidate
    trains and scores the same with or without reports. ``report`` may end the evaluation
    by raising."""

    every: int
    report: Callable[[int, dict[str, float]], None]

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {self.every!r}")


@dataclass
class Evaluated:
    """A built and retrained candidate with its metrics and the channel indices it kept."""

    model: nn.Module
    keep_indices: dict[str, list[int]]
    metrics: dict[str, float]


class Evaluator:
    """Holds the dense model and data once; scores a stream of candidates."""

    def __init__(
        self,
        *,
        dense: nn.Module,
        data: TaskData,
        space: SearchSpace,
        never_prune: list[str],
        config: EvaluatorConfig,
        importance: Importance | None = None,
    ) -> None:
        self.dense = dense.eval()
        self.data = data
        self.space = space
        self.never_prune = list(never_prune)
        self.config = config
        self.importance = importance
        self.example_input = data.example_input(1)
        keep_freed_memory()  # from the first trial on: latency is timed alike, training is faster
        self.placement = resolve_placement(config.device, amp=config.amp, channels_last=config.channels_last)
        self._teacher = self.placement.place(copy.deepcopy(self.dense)).eval()
        self._dense_logits = predict(self._teacher, data, data.val, placement=self.placement)
        self._teacher_cache: TeacherCache | None = None
        if (config.cache_teacher_logits and config.train.distill_weight > 0
                and len(data.train) * data.num_classes <= MAX_CACHED_LOGITS):
            self._teacher_cache = TeacherCache(self._teacher, len(data.train), data.num_classes)
        self._features = (FeatureDistortion.for_images(dense=self._teacher, data=data, space=space,
                                                       placement=self.placement,
                                                       sub_networks=config.feature_sub_networks)
                          if config.feature_distortion else None)
        self._database: LevelDatabase | None = None
        self._database_tried = not config.level_database
        self._built = 0

    def build(self, levels: np.ndarray) -> tuple[nn.Module, dict[str, list[int]]]:
        """The pruned model of ``levels`` on the CPU and its kept indices: from the level
        database when the model allows one, else materialised.

        The database costs about ``n_groups + n_levels`` materialisations, so it is built
        at the second candidate: a search pays it back, an export of one model never
        builds it."""
        self._built += 1
        if not self._database_tried and self._built >= 2:
            self._database_tried = True
            try:
                started = time.perf_counter()
                self._database = LevelDatabase.build(self.dense, self.space, self.example_input,
                                                     never_prune=self.never_prune, importance=self.importance)
                logger.debug("level database built in %.2f s", time.perf_counter() - started)
            except UnsupportedModel as exc:
                logger.warning("candidates are materialised from scratch: no level database (%s)", exc)
        if self._database is not None:
            return self._database.assemble(levels)
        return materialize(self.dense, self.space, levels, self.example_input,
                           never_prune=self.never_prune, importance=self.importance)

    def _distillation_teacher(self) -> nn.Module | TeacherCache | None:
        if self.config.train.distill_weight <= 0:
            return None
        return self._teacher_cache if self._teacher_cache is not None else self._teacher

    def run(
        self,
        levels: np.ndarray,
        *,
        fidelity: int,
        seed: int,
        eval_samples: int | None = None,
        init_state: dict[str, torch.Tensor] | None = None,
        init_levels: np.ndarray | None = None,
        progress: Progress | None = None,
        measurement: bool = False,
    ) -> Evaluated:
        """Materialise ``levels`` and retrain it ``fidelity`` steps (continuing from
        ``init_state`` when given, with a fresh schedule for the new steps), then score it on
        ``eval_samples`` held-out samples; ``progress`` hears held-out metrics on the way.
        ``init_levels``: the levels ``init_state`` was trained at when they are not ``levels``
        (every group keeping at most as many channels): its weights are narrowed to
        ``levels``, the channels ``levels`` keeps being a subset of those it kept, and
        BatchNorm statistics are recalibrated. ``measurement``: a searcher's measurement, which
        retrains as ``measurement_training`` says. Raises :class:`EvaluationFailed` when it cannot."""
        with torch.random.fork_rng(devices=[]):
            return self._run(levels, fidelity=fidelity, seed=seed, eval_samples=eval_samples, init_state=init_state,
                             init_levels=init_levels, progress=progress, measurement=measurement)

    def _run(self, levels: np.ndarray, *, fidelity: int, seed: int, eval_samples: int | None,
             init_state: dict[str, torch.Tensor] | None, init_levels: np.ndarray | None = None,
             progress: Progress | None = None, measurement: bool = False) -> Evaluated:
        started = time.perf_counter()
        narrowed = (init_state is not None and init_levels is not None
                    and not np.array_equal(self.space.kept_counts(init_levels), self.space.kept_counts(levels)))
        try:
            model, keep = self.build(levels)
            if narrowed:
                init_state = self._narrow(init_state, np.asarray(init_levels), keep)  # type: ignore[arg-type]
            if init_state is not None:
                model.load_state_dict(init_state)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise EvaluationFailed(f"could not build the candidate: {type(exc).__name__}: {exc}") from exc
        counted = count(model, self.example_input)  # on the CPU, before the model moves
        predicted_flops = int(self.space.cost("flops", levels))
        if counted.flops != predicted_flops:
            logger.warning("counted FLOPs %d differ from predicted %d", counted.flops, predicted_flops)
        model = self.placement.place(model)
        built = time.perf_counter()
        cfg = self.config
        bn_samples = 0
        try:
            if init_state is None or narrowed:  # continued weights carry statistics adapted to them
                bn_samples = recalibrate_batchnorm(model, self.data, batches=cfg.bn_batches,
                                                   batch_size=cfg.train.batch_size, seed=seed,
                                                   placement=self.placement)
            on_step = None
            if progress is not None:
                def on_step(steps_done: int, _loss: float) -> None:
                    if steps_done % progress.every == 0 and steps_done < fidelity:
                        scores = score(model, self.data, self.data.val, limit=eval_samples,
                                       reference=self._dense_logits, placement=self.placement)
                        model.train()
                        progress.report(steps_done, scores)
            if measurement and cfg.measurement_training == "features" and self._features is not None:
                outcome = self._features.mimic(model, keep, steps=fidelity, batch_size=cfg.train.batch_size,
                                               warmup_fraction=cfg.train.warmup_fraction, seed=seed)
                if outcome.steps and not outcome.diverged:  # statistics for the weights it learnt
                    bn_samples += recalibrate_batchnorm(model, self.data, batches=cfg.bn_batches,
                                                        batch_size=cfg.train.batch_size, seed=seed,
                                                        placement=self.placement)
            else:
                outcome = train(model, self.data, steps=fidelity, config=cfg.train, seed=seed,
                                teacher=self._distillation_teacher(), placement=self.placement, on_step=on_step)
            if outcome.diverged:
                raise EvaluationFailed(f"retraining diverged: loss {outcome.final_loss} at step {outcome.steps}")
            trained = time.perf_counter()
            scores = score(model, self.data, self.data.val, limit=eval_samples, reference=self._dense_logits,
                           placement=self.placement)
            if self._features is not None:
                try:
                    scores.update(self._features.measure(model, keep, limit=eval_samples))
                except ValueError as exc:  # features the carried group cannot place
                    raise EvaluationFailed(f"feature distortion: {exc}") from exc
        except torch.OutOfMemoryError as exc:
            raise EvaluationFailed(f"out of memory: {exc}") from exc
        except RuntimeError as exc:  # other runtime failures of this candidate
            raise EvaluationFailed(f"retraining failed: {type(exc).__name__}: {exc}") from exc
        if not np.isfinite(scores["loss"]):
            raise EvaluationFailed(f"held-out loss is {scores['loss']}")
        metrics: dict[str, float] = {
            **scores,
            "flops": counted.flops,
            "params": counted.params,
            "flops_ratio": counted.flops / self.space.dense["flops"],
            "params_ratio": counted.params / self.space.dense["params"],
            "steps": outcome.steps,
            "samples": outcome.samples + bn_samples,
            "build_seconds": built - started,
            "train_seconds": trained - built,
            "threads": torch.get_num_threads(),
        }
        if cfg.measure_latency:
            latency = measure_latency(model, self.data.input_shape, batch_size=cfg.latency_batch_size,
                                      repeats=cfg.latency_repeats, device=self.placement.device)
            metrics["latency_ms"] = latency.median_ms
            metrics["latency_iqr_ms"] = latency.iqr_ms
        metrics["seconds"] = time.perf_counter() - started
        return Evaluated(model=model.cpu(), keep_indices=keep, metrics=metrics)

    def _narrow(self, state: dict[str, torch.Tensor], at: np.ndarray,
                keep: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        """``state`` (trained at levels ``at``) narrowed to the channels ``keep`` names:
        the model at ``at`` is built, loaded and pruned again by Torch-Pruning to the
        positions of ``keep`` among its own kept channels (kept sets are nested: every level
        keeps a prefix of one importance order on the dense weights)."""
        model, parent_keep = self.build(at)
        model.load_state_dict(state)
        positions: dict[str, list[int]] = {}
        for group in self.space.groups:
            had = parent_keep.get(group.name, list(range(group.size)))
            wanted = keep.get(group.name, list(range(group.size)))
            where = {channel: i for i, channel in enumerate(had)}
            missing = [c for c in wanted if c not in where]
            if missing:
                raise ValueError(f"group {group.name!r} would keep channels {missing[:5]} its parent pruned")
            if len(wanted) < len(had):
                positions[group.name] = [where[c] for c in wanted]
        prune_to_indices(model, positions, self.example_input, never_prune=self.never_prune)
        return model.state_dict()

    def evaluate(self, levels: np.ndarray, *, fidelity: int, seed: int) -> dict[str, float]:
        """Metrics of ``levels`` after ``fidelity`` retraining steps."""
        return self.run(levels, fidelity=fidelity, seed=seed).metrics
