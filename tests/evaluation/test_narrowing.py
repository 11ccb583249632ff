"""Continuing a trained trial at deeper levels (``dp``'s rounds): its weights narrowed.

The reference is pruning itself: the dense model's weights narrowed from one level vector
to a deeper one must be exactly what pruning the dense model to the deeper one gives, as
kept channel sets are nested (one importance order per group, cut at each level)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.data import load_data
from autoprune.evaluation.evaluator import EvaluationFailed, Evaluator, EvaluatorConfig
from autoprune.executors.base import Job, run_job
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
                     config=EvaluatorConfig(fidelity=5, bn_batches=2, latency_repeats=0, measure_latency=False,
                                            device="cpu"))


def _deeper(evaluator: Evaluator) -> tuple[np.ndarray, np.ndarray]:
    space = evaluator.space
    parent = np.array([2 + g % 3 for g in range(space.n_groups)], dtype=np.int64)
    child = parent.copy()
    child[0] += 5
    child[-1] += 3
    return parent, child


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}


def test_the_dense_weights_narrowed_are_the_pruned_dense_weights(evaluator: Evaluator) -> None:
    parent, child = _deeper(evaluator)
    dense_state = evaluator.dense.state_dict()
    at_parent = evaluator._narrow(dense_state, evaluator.space.uniform_candidate(0), evaluator.build(parent)[1])
    _, keep = evaluator.build(child)
    narrowed = evaluator._narrow(at_parent, parent, keep)
    expected = evaluator.build(child)[0].state_dict()
    assert narrowed.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(narrowed[key], value, rtol=0, atol=0)


def test_a_trained_trial_is_continued_at_deeper_levels(evaluator: Evaluator) -> None:
    parent, child = _deeper(evaluator)
    trained = evaluator.run(parent, fidelity=5, seed=0)
    state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    job = Job(trial_id=1, levels=child, fidelity=0, seed=0, parent=0, init_state=state, init_levels=parent)
    result = run_job(evaluator, job)
    assert result.ok, result.error
    assert result.metrics["flops"] == evaluator.space.cost("flops", child)
    assert result.metrics["samples"] > 0, "narrowed weights get their BatchNorm statistics recalibrated"
    continued = evaluator.run(child, fidelity=0, seed=0, init_state=state, init_levels=parent)
    from_dense = evaluator.run(child, fidelity=0, seed=0)
    # the retrained weights were carried over, not the dense ones: check against narrowing by hand
    by_hand = evaluator._narrow(state, parent, evaluator.build(child)[1])
    for key, value in _weights(continued.model).items():
        torch.testing.assert_close(value, by_hand[key], rtol=0, atol=0)
    assert any(not torch.equal(v, _weights(from_dense.model)[k]) for k, v in _weights(continued.model).items())


def test_levels_keeping_channels_the_parent_pruned_fail_as_a_trial(evaluator: Evaluator) -> None:
    parent, child = _deeper(evaluator)
    state = evaluator.run(child, fidelity=0, seed=0).model.state_dict()
    with pytest.raises(EvaluationFailed, match="its parent pruned"):
        evaluator.run(parent, fidelity=0, seed=0, init_state=state, init_levels=child)
