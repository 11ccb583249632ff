"""Everything a run needs before its first evaluation, checked before anything is written.

From a :class:`SearchConfig`: the task (data and trained dense model), the search space,
an evaluator, the executor that will run it, the dense model's reference metrics, and
budgets resolved to absolute limits (unreachable ones refused). Used to start a run, to
resume one, and to export.

Latency is measured where the trials will be measured: the dense model's latency and
the per-layer latency tables are taken on one of the executor's workers (its device, its
thread count), not in the driver. A driver on a laptop CPU with GPU workers on a Ray
cluster would otherwise hold GPU trials to a CPU budget, and even CPU workers run torch
with fewer threads than a driver that has the whole machine.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from typing import Any

import torch
from torch import nn

from autoprune.config import SearchConfig
from autoprune.data import data_fingerprint
from autoprune.errors import UserError
from autoprune.evaluation.allocator import keep_freed_memory
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.evaluation.latency import Latency, measure_latency
from autoprune.evaluation.latency_table import build_latency_model
from autoprune.evaluation.training import TrainConfig, measure, recalibrate_batchnorm, resolve_placement
from autoprune.executors.base import Executor
from autoprune.executors.local import LocalExecutor
from autoprune.searchers.base import Problem
from autoprune.space.analysis import Coupling, analyse
from autoprune.space.budget import Constraints, parse_budgets, resolve
from autoprune.space.graph import unmatched_patterns
from autoprune.space.latency_model import LatencyModel
from autoprune.space.materialize import materialize
from autoprune.space.search_space import SearchSpace
from autoprune.space.stage_split import StageSplit
from autoprune.store.quality import ACCURACY, Quality
from autoprune.tasks import Task, cache_dir, prepare_task, warn_if_near_chance

#: starts the executor of a run around its evaluator (``local`` when none is given)
StartExecutor = Callable[[Evaluator], Executor]


@dataclass
class Prepared:
    config: SearchConfig
    task: Task
    space: SearchSpace
    constraints: Constraints
    dense_metrics: dict[str, float]
    evaluator: Evaluator
    #: how the dense model's latency was taken (device, threads, batch size, ...)
    dense_latency: dict[str, Any]
    executor: Executor
    #: the data's content hash (run.json keeps it; resume and export refuse other data)
    data_fingerprint: str
    #: what the front ranks by: accuracy for classifiers, perplexity for language models
    quality: Quality = ACCURACY

    def evaluator_record(self) -> dict[str, Any]:
        """How trials are scored, for run.json."""
        record = self.evaluator.config.to_dict()
        placement = getattr(self.evaluator, "placement", None)
        if placement is not None:
            record["placement"] = asdict(placement)
        else:
            record["device"] = getattr(self.evaluator, "device", None)
        return record

    @property
    def problem(self) -> Problem:
        scores = stages = None
        language_model = not isinstance(self.task, Task)
        if not language_model:  # image models: Torch-Pruning's importance classes apply
            from autoprune.space.channel_scores import channel_scores_provider

            scores = channel_scores_provider(self.task.dense, self.task.data, self.space,
                                             never_prune=list(self.task.space_config.never_prune))
            stages = stages_provider(self.task.dense, self.task.example_input(), self.space)
        else:  # language models: runs of decoder blocks
            from autoprune.llm.features import lm_stage_split
            from autoprune.llm.structure import find_structure

            structure, space = find_structure(self.task.dense), self.space
            stages = lambda: lm_stage_split(structure, space)  # noqa: E731
        return Problem(space=self.space, constraints=self.constraints, channel_scores=scores, stages=stages,
                       language_model=language_model)


def latency_settings(config: SearchConfig) -> dict[str, Any]:
    """``latency_repeats`` and ``measure_latency`` of an evaluator config (its own default
    repeats when the run names none; 0 repeats: latency not measured)."""
    if config.latency_repeats is None:
        return {}
    if config.latency_repeats == 0:
        return {"measure_latency": False}
    return {"latency_repeats": config.latency_repeats}


#: retraining defaults of an image model where the run names none (SGD with momentum; the
#: proxy studies found distillation ranks better at 100 steps: tau 0.61 / 0.34 against 0.32 / 0.17)
DEFAULT_LR = 0.05
DEFAULT_BATCH_SIZE = 64
DEFAULT_DISTILL_WEIGHT = 0.5


def evaluator_config(config: SearchConfig) -> EvaluatorConfig:
    return EvaluatorConfig(
        fidelity=config.fidelity,
        bn_batches=config.bn_batches,
        train=TrainConfig(lr=DEFAULT_LR if config.lr is None else config.lr,
                          batch_size=DEFAULT_BATCH_SIZE if config.batch_size is None else config.batch_size,
                          distill_weight=(DEFAULT_DISTILL_WEIGHT if config.distill_weight is None
                                          else config.distill_weight)),
        latency_batch_size=config.latency_batch_size,
        device=config.device,
        feature_distortion=needs_feature_distortion(config),
        feature_sub_networks=feature_sub_networks(config),
        measurement_training=measurement_training(config),
        **latency_settings(config),
    )


def score_dense(task: Task, *, bn_batches: int, batch_size: int, seed: int) -> dict[str, float]:
    """The dense model's held-out accuracy and loss and its test accuracy, after the
    BatchNorm recalibration every candidate gets (``bn_batches`` training batches), so
    candidates are compared with a reference measured alike. ``bn_recalibration_samples``
    says how many samples that took (0: the model has no BatchNorm, or ``bn_batches`` is 0);
    when it is not 0, ``accuracy_as_given`` is the held-out accuracy with the model's own
    statistics. The task's dense model itself is left as it is (it is the teacher)."""
    model = copy.deepcopy(task.dense)
    samples = recalibrate_batchnorm(model, task.data, batches=bn_batches, batch_size=batch_size, seed=seed)
    accuracy, loss = measure(model, task.data, task.data.val)
    test_accuracy, _ = measure(model, task.data, task.data.test)
    scores = {"accuracy": accuracy, "loss": loss, "test_accuracy": test_accuracy, "bn_recalibration_samples": samples}
    if samples:
        scores["accuracy_as_given"] = measure(task.dense, task.data, task.data.val)[0]
    return scores


def needs_feature_distortion(config: SearchConfig) -> bool:
    """Whether the run's searcher reads feature distortion at stage boundaries
    (``Searcher.needs_feature_distortion``, e.g. emo-pms)."""
    from autoprune.searchers import SEARCHERS

    searcher = SEARCHERS.get(config.searcher)
    return searcher is not None and searcher.needs_feature_distortion(config.searcher_options)


def feature_sub_networks(config: SearchConfig) -> int | None:
    """How many runs of stages the run's searcher reads the feature distortion of
    (``Searcher.feature_sub_networks``; None: every stage)."""
    from autoprune.searchers import SEARCHERS

    searcher = SEARCHERS.get(config.searcher)
    return None if searcher is None else searcher.feature_sub_networks(config.searcher_options)


def measurement_training(config: SearchConfig) -> str:
    """How the run's searcher wants its measurements retrained (``Searcher.measurement_training``)."""
    from autoprune.searchers import SEARCHERS

    searcher = SEARCHERS.get(config.searcher)
    return "task" if searcher is None else searcher.measurement_training(config.searcher_options)


def stages_provider(dense: nn.Module, example_input: torch.Tensor,
                    space: SearchSpace) -> Callable[[], StageSplit | None]:
    """The model's stages, found on first call and remembered (:mod:`autoprune.space.stages`)."""
    from autoprune.space.stages import find_stages

    found: list[StageSplit | None] = []

    def stages() -> StageSplit | None:
        if not found:
            found.append(find_stages(dense, example_input, space))
        return found[0]

    return stages


@dataclass(frozen=True)
class LatencyRequest:
    """What measuring the dense model's latency (and the latency tables) needs: small
    enough to ship to a worker, which resolves ``device`` the way its evaluator does."""

    dense: nn.Module
    example_input: torch.Tensor
    space: SearchSpace
    couplings: dict[str, Coupling]
    never_prune: tuple[str, ...]
    batch_size: int
    device: str
    with_tables: bool
    cache_key: dict[str, Any] = field(default_factory=dict)


def measure_reference_latency(request: LatencyRequest) -> tuple[Latency, LatencyModel | None]:
    """The dense model's latency and, when asked, the latency model, measured in this process."""
    device = resolve_placement(request.device).device
    shape = tuple(request.example_input.shape[1:])
    dense_latency = measure_latency(request.dense, shape, batch_size=request.batch_size, device=device)
    if not request.with_tables:
        return dense_latency, None
    latency_model = build_latency_model(
        model=request.dense, space=request.space, couplings=request.couplings, example_input=request.example_input,
        materialize=lambda levels: materialize(request.dense, request.space, levels, request.example_input,
                                               never_prune=list(request.never_prune))[0],
        batch_size=request.batch_size, device=device, cache_folder=cache_dir(), cache_key=request.cache_key,
    )
    return dense_latency, latency_model


def prepare(config: SearchConfig, *, start_executor: StartExecutor | None = None,
            latency_model: LatencyModel | None = None, searched_data: str | None = None) -> Prepared:
    """Build and check everything; raises :class:`UserError` on bad input, writes nothing.

    ``start_executor`` starts the run's workers (default: evaluate in this process); the
    reference latencies are measured on them, and the caller closes the executor
    (``Prepared.executor``) unless this raises. ``latency_model``: the one a run was
    searched with (its run.json), for resume and export: measured again, its tables would
    differ a little, and a resumed searcher would propose other candidates than it did.
    ``searched_data``: the data fingerprint a run was searched on; other data (a factory
    whose data changed, another --data-root) is refused before any dense model trains."""
    budgets = parse_budgets(list(config.budget))  # cheapest check first
    if is_language_run(config):
        from autoprune.llm.setup import prepare_language

        _check_placement(config, start_executor)
        return prepare_language(config, start_executor=start_executor, searched_data=searched_data,
                                latency_model=latency_model)
    if config.seq_len is not None:
        raise UserError("--seq-len applies only to language models (--model hf:PATH with --data text:PATH); "
                        "leave it out.")
    if config.train_params != "all":
        raise UserError(f"--train-params {config.train_params} applies only to language models; image models "
                        "retrain all their parameters, so leave it out.")
    _check_placement(config, start_executor)
    analysed: dict[str, Any] = {}

    def analyse_architecture(untrained: Task) -> None:
        """Groups and costs depend on the architecture only: analysed before weights are
        trained, so an unreachable FLOPs or params budget is refused at once."""
        if searched_data is not None and data_fingerprint(untrained.data) != searched_data:
            raise UserError(f"the run was searched on other data than {config.data!r} gives now (its images, "
                            "labels, split or normalisation changed); start a new run.")
        never_prune = list(untrained.space_config.never_prune)
        unmatched = unmatched_patterns(untrained.dense, never_prune)
        if unmatched:
            examples = [name for name, _ in untrained.dense.named_modules() if name][:4]
            raise UserError(f"never_prune patterns {unmatched} match no layer of {untrained.model_spec.name}; "
                            f"layer names look like {examples} (model.named_modules()), and * matches any text.")
        try:
            analysed["space"], analysed["couplings"] = analyse(untrained.dense, untrained.example_input(),
                                                               grid=untrained.space_config.grid,
                                                               never_prune=never_prune)
        except UserError:
            raise
        except Exception as exc:  # an architecture the analysis does not cover is input, not a crash
            raise UserError(f"the pruning analysis cannot handle model {untrained.model_spec.name!r} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); list its "
                            "unsupported layers under never_prune in a --space file, or use another model.") from None
        resolve([b for b in budgets if b.resource != "latency"], analysed["space"], None)

    task = prepare_task(model=config.model, data=config.data, data_root=config.data_root,
                        image_size=config.image_size, checkpoint=config.checkpoint, space_file=config.space_file,
                        before_weights=analyse_architecture)
    never_prune = list(task.space_config.never_prune)
    example = task.example_input()
    space, couplings = analysed["space"], analysed["couplings"]
    try:
        evaluation = evaluator_config(config)
    except ValueError as exc:
        raise UserError(f"{exc}.") from None
    reference = score_dense(task, bn_batches=evaluation.bn_batches, batch_size=evaluation.train.batch_size,
                            seed=config.seed)
    # a search of an untrained or misfed model is wasted
    warn_if_near_chance(reference["accuracy"], task, as_given=reference.get("accuracy_as_given"))
    try:
        evaluator = Evaluator(dense=task.dense, data=task.data, space=space, never_prune=never_prune,
                              config=evaluation)
    except ValueError as exc:  # e.g. --device cuda on a machine without CUDA
        raise UserError(f"{exc}; use --device auto or cpu.") from None
    executor = start_executor(evaluator) if start_executor is not None else LocalExecutor(evaluator)
    try:
        # where the trials are measured, so dense, tables and trials compare (module docstring)
        request = LatencyRequest(
            dense=task.dense, example_input=example, space=space, couplings=couplings,
            never_prune=tuple(never_prune), batch_size=config.latency_batch_size, device=config.device,
            with_tables=latency_model is None and needs_latency_model(config, budgets),
            cache_key={"model": task.model_spec.to_dict()},  # timings depend on shapes, not weight values
        )
        dense_latency, measured = executor.call(measure_reference_latency, request)
        latency_model = latency_model or measured
        dense_metrics: dict[str, float] = {
            **reference, "flops": space.dense["flops"], "params": space.dense["params"],
            "latency_ms": dense_latency.median_ms,
        }
        if latency_model is not None:
            dense_metrics["predicted_latency_ms"] = float(latency_model.predict(space.dense_candidate())[0])
        constraints = resolve(budgets, space, latency_model)
    except BaseException:
        executor.close()
        raise
    return Prepared(config=config, task=task, space=space, constraints=constraints, dense_metrics=dense_metrics,
                    evaluator=evaluator, dense_latency=dense_latency.to_dict(), executor=executor,
                    data_fingerprint=data_fingerprint(task.data))


def needs_latency_model(config: SearchConfig, budgets: list[Any]) -> bool:
    """Whether the run must measure a latency model: a latency budget, or a searcher whose
    options predict latency (``Searcher.needs_latency_model``, e.g. emo's objectives)."""
    from autoprune.searchers import SEARCHERS

    searcher = SEARCHERS.get(config.searcher)
    return (any(b.resource == "latency" for b in budgets)
            or (searcher is not None and searcher.needs_latency_model(config.searcher_options)))


def is_language_run(config: SearchConfig) -> bool:
    """Whether the run prunes a language model (``--model hf:PATH`` or ``--data text:PATH``;
    a mismatched pair is refused by the language-model branch in one sentence)."""
    model = config.model or ""
    return model.startswith("hf:") or config.data.startswith("text:")


def _check_placement(config: SearchConfig, start_executor: StartExecutor | None) -> None:
    """Refuse a device or executor this machine cannot give, before anything slow."""
    if (start_executor is None or config.executor == "local") and config.device != "auto":
        try:  # here, not on a worker: evaluations run in this process
            resolve_placement(config.device)
        except ValueError as exc:
            raise UserError(f"{exc}; use --device auto or cpu.") from None
    if start_executor is not None and config.executor == "ray":  # Ray starts only after the model trains
        from autoprune.executors.ray_cluster import check_local_gpus, import_ray

        import_ray()
        if not config.address:
            check_local_gpus(config.gpus_per_worker)


def environment() -> dict[str, Any]:
    """Library versions and machine facts recorded with every run."""
    packages = {}
    for name in ("autoprune", "torch", "torch-pruning", "numpy", "pandas", "pymoo"):
        try:
            packages[name] = version(name)
        except Exception:  # a package missing from metadata is not worth failing a run over
            packages[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "allocator": keep_freed_memory()}


def check_same_space(stored: dict[str, Any], space: SearchSpace, run_dir: str) -> None:
    if stored != space.to_dict():
        raise UserError(
            f"the model or search space of {run_dir!r} changed since the run started, so it cannot be "
            "resumed or exported; start a new run."
        )


def check_same_model(stored: dict[str, Any] | None, prepared: Prepared, run_dir: str) -> None:
    """Refuse a language model whose files changed since the run started (its content hash,
    run.json ``model_spec.fingerprint``): the journal's scores belong to the old weights.
    Image models are covered by the data fingerprint and their cached or given weights."""
    before = (stored or {}).get("fingerprint")
    now = getattr(prepared.task.model_spec, "fingerprint", None)
    if before and now and before != now:
        raise UserError(f"the model files of {run_dir!r} changed since the run started (content hash {now}, was "
                        f"{before}), so it cannot be resumed or exported; restore them or start a new run.")

