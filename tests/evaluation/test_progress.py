"""Held-out metrics reported while a candidate retrains (``Evaluator.run(progress=...)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.data import load_data
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig, Progress
from autoprune.models import build_model
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    digits = load_data("digits")
    torch.manual_seed(0)
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    config = load_space_config("digitnet")
    space = build_search_space(model, digits.example_input(1), grid=config.grid, never_prune=[])
    return Evaluator(dense=model, data=digits, space=space, never_prune=[],
                     config=EvaluatorConfig(fidelity=12, bn_batches=2, measure_latency=False, device="cpu"))


class Stop(Exception):
    pass


def test_reports_come_every_k_steps_and_leave_the_result_unchanged(evaluator: Evaluator) -> None:
    levels = np.array([3, 5, 2, 4])
    plain = evaluator.run(levels, fidelity=12, seed=1, eval_samples=128).metrics
    reports: list[tuple[int, dict[str, float]]] = []
    reported = evaluator.run(levels, fidelity=12, seed=1, eval_samples=128,
                             progress=Progress(every=4, report=lambda s, m: reports.append((s, m)))).metrics
    assert [s for s, _ in reports] == [4, 8], "every 4 steps before the last"
    assert all(set(m) >= {"accuracy", "loss", "kl_to_dense"} and m["eval_samples"] == 128 for _, m in reports)
    for key in ("accuracy", "loss", "kl_to_dense"):
        assert reported[key] == plain[key], "reporting changed the training"
    assert reports[0][1]["loss"] != reports[1][1]["loss"] != reported["loss"], "scores of the model as it trains"


def test_a_reporter_may_end_the_evaluation(evaluator: Evaluator) -> None:
    def stop(steps: int, _metrics: dict[str, float]) -> None:
        raise Stop(steps)

    with pytest.raises(Stop):
        evaluator.run(np.array([1, 1, 1, 1]), fidelity=12, seed=0, progress=Progress(every=5, report=stop))


@pytest.mark.parametrize("every", [0, -2, 1.5, True])
def test_bad_intervals_are_refused(every: object) -> None:
    with pytest.raises(ValueError, match="every"):
        Progress(every=every, report=lambda s, m: None)  # type: ignore[arg-type]
