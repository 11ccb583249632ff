"""Everything a run needs before its first evaluation, checked before anything is written.

From a :class:`SearchConfig`: the task (data and trained dense model), the search space,
budgets resolved to absolute limits (unreachable ones refused), the dense model's
reference metrics, and an evaluator. Used to start a run, to resume one, and to export.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch

from autoprune.config import SearchConfig
from autoprune.errors import UserError
from autoprune.evaluation.allocator import keep_freed_memory
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.evaluation.latency import measure_latency
from autoprune.evaluation.training import TrainConfig, measure
from autoprune.searchers.base import Problem
from autoprune.evaluation.latency_table import build_latency_model
from autoprune.space.analysis import analyse
from autoprune.space.budget import Constraints, parse_budgets, resolve
from autoprune.space.materialize import materialize
from autoprune.space.search_space import SearchSpace
from autoprune.tasks import Task, cache_dir, prepare_task


@dataclass
class Prepared:
    config: SearchConfig
    task: Task
    space: SearchSpace
    constraints: Constraints
    dense_metrics: dict[str, float]
    evaluator: Evaluator

    @property
    def problem(self) -> Problem:
        return Problem(space=self.space, constraints=self.constraints)


def evaluator_config(config: SearchConfig) -> EvaluatorConfig:
    return EvaluatorConfig(
        fidelity=config.fidelity,
        bn_batches=config.bn_batches,
        train=TrainConfig(lr=config.lr, batch_size=config.batch_size, distill_weight=config.distill_weight),
        latency_batch_size=config.latency_batch_size,
        device=config.device,
    )


def prepare(config: SearchConfig) -> Prepared:
    """Build and check everything; raises :class:`UserError` on bad input, writes nothing."""
    budgets = parse_budgets(list(config.budget))  # cheapest check first
    task = prepare_task(model=config.model, data=config.data, data_root=config.data_root,
                        image_size=config.image_size, checkpoint=config.checkpoint, space_file=config.space_file)
    never_prune = list(task.space_config.never_prune)
    example = task.example_input()
    space, couplings = analyse(task.dense, example, grid=task.space_config.grid, never_prune=never_prune)
    shape = task.data.input_shape
    val_accuracy, val_loss = measure(task.dense, task.data, task.data.val)
    test_accuracy, _ = measure(task.dense, task.data, task.data.test)
    try:
        evaluator = Evaluator(dense=task.dense, data=task.data, space=space, never_prune=never_prune,
                              config=evaluator_config(config))
    except ValueError as exc:  # e.g. --device cuda on a machine without CUDA
        raise UserError(f"{exc}; use --device auto or cpu.") from None
    # latency where the evaluator measures its trials, so dense, tables and trials compare
    latency_device = evaluator.placement.device
    dense_latency = measure_latency(task.dense, shape, batch_size=config.latency_batch_size, device=latency_device)
    dense_metrics: dict[str, float] = {
        "accuracy": val_accuracy, "loss": val_loss, "test_accuracy": test_accuracy,
        "flops": space.dense["flops"], "params": space.dense["params"], "latency_ms": dense_latency.median_ms,
    }
    latency_model = None
    if any(b.resource == "latency" for b in budgets):
        latency_model = build_latency_model(
            model=task.dense, space=space, couplings=couplings, example_input=example,
            materialize=lambda levels: materialize(task.dense, space, levels, example, never_prune=never_prune)[0],
            batch_size=config.latency_batch_size, device=latency_device, cache_folder=cache_dir(),
            cache_key={"model": task.model_spec.to_dict(), "weights": task.weights_source},
        )
        dense_metrics["predicted_latency_ms"] = float(latency_model.predict(space.dense_candidate())[0])
    constraints = resolve(budgets, space, latency_model)
    return Prepared(config=config, task=task, space=space, constraints=constraints,
                    dense_metrics=dense_metrics, evaluator=evaluator)


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
