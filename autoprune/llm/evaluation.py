"""The evaluator of a language-model search, built alike in the driver and on every Ray worker.

A candidate is assembled from the level database (importance scored once per process),
priced by the space's exact cost model (``tests/llm`` holds it equal to counting the
built model, so no counting pass is spent per trial), then retrained and scored by
:class:`~autoprune.llm.lm_evaluator.LMEvaluator` (with the feature distortion at runs of
decoder blocks, :mod:`autoprune.llm.features`, when the searcher reads it). What a worker
needs travels once, as an :class:`LMEvaluatorPayload`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.llm.assembly import LMLevelDatabase
from autoprune.llm.features import lm_feature_distortion
from autoprune.llm.lm_evaluator import LMEvaluator, LMEvaluatorConfig
from autoprune.llm.structure import find_structure
from autoprune.llm.text_data import TokenData
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMEvaluatorPayload:
    """Everything a worker needs to build the evaluator, shipped once per run."""

    dense: Any  # torch.nn.Module
    data: TokenData
    space: dict[str, Any]
    config: LMEvaluatorConfig
    importance: str = "magnitude"
    calibration_samples: int = 16


def calibration_tokens(data: TokenData, samples: int) -> torch.Tensor:
    """The training sequences activation importance is measured on (the first ``samples``)."""
    return data.train[: max(1, min(samples, len(data.train)))]


class SpaceLMEvaluator(LMEvaluator):
    """An :class:`LMEvaluator` whose candidates are level vectors of ``space``, assembled
    from a level database of ``dense`` and priced by the space's cost model."""

    def __init__(self, *, dense: nn.Module, data: TokenData, space: SearchSpace, config: LMEvaluatorConfig,
                 importance: str = "magnitude", calibration_samples: int = 16) -> None:
        started = time.perf_counter()
        calibration = calibration_tokens(data, calibration_samples) if importance == "activation" else None
        self.database = LMLevelDatabase.build(dense, space, importance=importance, calibration=calibration)
        logger.debug("level database (%s importance) in %.1f s", importance, time.perf_counter() - started)
        self.space = space
        self.importance = importance
        self.calibration_samples = calibration_samples
        super().__init__(dense=dense, data=data, build=self.database.assemble, config=config, cost=self._price)
        if config.feature_distortion:
            self.features = lm_feature_distortion(dense=self._teacher, data=data, space=space,
                                                  structure=find_structure(dense), device=self.device,
                                                  batch_size=config.eval_batch_size,
                                                  sub_networks=config.feature_sub_networks,
                                                  norms_and_biases_only=config.train_norms_and_biases_only)
            if self.features is None:
                logger.warning("feature distortion: fewer than two decoder blocks are pruned; none is reported")

    def _price(self, levels: np.ndarray, _model: nn.Module) -> dict[str, float]:
        flops = int(self.space.cost("flops", levels))
        params = int(self.space.cost("params", levels))
        return {"flops": flops, "params": params,
                "flops_ratio": flops / self.space.dense["flops"], "params_ratio": params / self.space.dense["params"]}

    def worker_setup(self) -> tuple[Any, LMEvaluatorPayload]:
        """How a Ray worker builds the same evaluator: (runner factory, payload)."""
        payload = LMEvaluatorPayload(dense=self.dense, data=self.data, space=self.space.to_dict(), config=self.config,
                                     importance=self.importance, calibration_samples=self.calibration_samples)
        return lm_evaluator_runner, payload


def lm_evaluator_runner(payload: LMEvaluatorPayload):  # noqa: ANN201 (a JobRunner)
    """A Ray worker's runner: one language-model evaluator, built once, scoring every job."""
    from autoprune.executors.base import run_job

    evaluator = SpaceLMEvaluator(dense=payload.dense, data=payload.data, space=SearchSpace.from_dict(payload.space),
                                 config=payload.config, importance=payload.importance,
                                 calibration_samples=payload.calibration_samples)

    def run(job):  # noqa: ANN001, ANN202
        return run_job(evaluator, job)

    return run
