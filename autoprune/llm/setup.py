"""Everything a language-model run needs before its first evaluation, checked before anything is written.

The language-model branch of :func:`autoprune.setup_run.prepare`: the same
:class:`~autoprune.setup_run.Prepared` comes back (task, space, budgets, evaluator,
executor, dense metrics), so the loop, the journal, resume, the executors and export
treat both kinds of model alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from autoprune.config import SearchConfig
from autoprune.errors import UserError
from autoprune.executors.base import Executor
from autoprune.executors.local import LocalExecutor
from autoprune.llm.evaluation import SpaceLMEvaluator
from autoprune.llm.latency import LMLatencyRequest, build_lm_latency_model, check_latency_measured
from autoprune.llm.lm_evaluator import LMEvaluatorConfig, measure_lm_latency
from autoprune.llm.space import build_lm_space, check_keeps_a_block
from autoprune.llm.task import prepare_language_task
from autoprune.space.budget import parse_budgets, resolve
from autoprune.space.latency_model import LatencyModel
from autoprune.store.quality import PERPLEXITY

logger = logging.getLogger(__name__)

#: retraining defaults of a language model where the run names none (AdamW on a pretrained
#: model wants a far smaller step than SGD on a CNN; sequences are long, so batches small)
DEFAULT_LR = 1e-4
DEFAULT_BATCH_SIZE = 4
#: pure distillation to the dense model, as DarwinLM and Týr-the-Pruner retrain
DEFAULT_DISTILL_WEIGHT = 1.0


def lm_evaluator_config(config: SearchConfig) -> LMEvaluatorConfig:
    """How the run's candidates are retrained and scored (``None`` options take the defaults above)."""
    from autoprune.setup_run import (feature_sub_networks, latency_settings, measurement_training,
                                     needs_feature_distortion)

    distill = DEFAULT_DISTILL_WEIGHT if config.distill_weight is None else config.distill_weight
    return LMEvaluatorConfig(
        fidelity=config.fidelity,
        lr=DEFAULT_LR if config.lr is None else config.lr,
        batch_size=DEFAULT_BATCH_SIZE if config.batch_size is None else config.batch_size,
        lm_weight=1.0 - distill,
        train_norms_and_biases_only=config.train_params == "norms-and-biases",
        latency_batch_size=config.latency_batch_size,
        device=config.device,
        feature_distortion=needs_feature_distortion(config),
        feature_sub_networks=feature_sub_networks(config),
        measurement_training=measurement_training(config),
        **latency_settings(config),
    )


def prepare_language(config: SearchConfig, *, start_executor: Callable[[Any], Executor] | None,
                     searched_data: str | None, latency_model: LatencyModel | None = None) -> Any:
    """Load, analyse and check a language-model run; returns a :class:`~autoprune.setup_run.Prepared`.

    ``latency_model``: the one a run was searched with (resume, export), else measured
    here when a budget needs it (:mod:`autoprune.llm.latency`)."""
    from autoprune.setup_run import Prepared, needs_latency_model

    budgets = parse_budgets(list(config.budget))
    lm_config = lm_evaluator_config(config)
    timed = [b for b in budgets if b.resource == "latency"]
    if timed:
        check_latency_measured(lm_config)
    task = prepare_language_task(model=config.model, data=config.data, seq_len=config.seq_len,
                                 space_file=config.space_file)
    if searched_data is not None and task.data_fingerprint() != searched_data:
        raise UserError(f"the run was searched on other text than {config.data!r} gives now (its files, split, "
                        "sequence length or tokenizer changed); start a new run.")
    options = task.space_config.language
    space = build_lm_space(task.dense, grid=task.space_config.grid, seq_len=task.data.seq_len,
                           attention_mode=options.get("attention_mode", "kv_groups"),
                           remove_blocks=options.get("remove_blocks", True),
                           params_with_embeddings=options.get("params_with_embeddings", False),
                           never_prune=task.space_config.never_prune)
    untimed = [b for b in budgets if b.resource != "latency"]
    check_keeps_a_block(space, resolve(untimed, space, None).limits)  # refused before any model runs
    try:
        evaluator = SpaceLMEvaluator(dense=task.dense, data=task.data, space=space, config=lm_config,
                                     importance=options.get("importance", "activation"),
                                     calibration_samples=options.get("calibration_samples", 16))
    except ValueError as exc:  # e.g. --device cuda on a machine without CUDA
        if isinstance(exc, UserError):
            raise
        raise UserError(f"{exc}; use --device auto or cpu.") from None
    executor = start_executor(evaluator) if start_executor is not None else LocalExecutor(evaluator)
    try:
        latency = (executor.call(measure_lm_latency, task.dense, lm_config, task.data.seq_len)
                   if lm_config.measure_latency else {})
        dense_metrics: dict[str, float] = {  # the test split is scored only when a model is exported
            **evaluator.dense_metrics,
            "flops": space.dense["flops"], "params": space.dense["params"],
            **{key: latency[key] for key in ("latency_ms", "decode_ms_per_token") if key in latency},
        }
        if latency_model is None and needs_latency_model(config, budgets):
            latency_model = executor.call(build_lm_latency_model, LMLatencyRequest(
                dense=task.dense, space=space, config=lm_config, seq_len=task.data.seq_len,
                cache_key={"model": task.model_spec.to_dict()}, seed=config.seed))
        if latency_model is not None:
            dense_metrics["predicted_latency_ms"] = float(latency_model.predict(space.dense_candidate())[0])
        constraints = resolve(budgets, space, latency_model)
        check_keeps_a_block(space, constraints.limits, latency_model)
    except BaseException:
        executor.close()
        raise
    logger.info("dense %s: held-out perplexity %.2f, %s FLOPs (MACs) per %d-token sequence, %s params (%s)",
                task.model_spec.model_type, dense_metrics["perplexity"], f"{space.dense['flops']:,}",
                task.data.seq_len, f"{space.dense['params']:,}",
                "with embeddings" if options.get("params_with_embeddings") else "non-embedding")
    return Prepared(config=config, task=task, space=space, constraints=constraints, dense_metrics=dense_metrics,
                    evaluator=evaluator, dense_latency={**latency, "seq_len": task.data.seq_len}, executor=executor,
                    data_fingerprint=task.data_fingerprint(), quality=PERPLEXITY)
