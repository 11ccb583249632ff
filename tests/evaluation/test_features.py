"""Feature distortion at stage boundaries against hand computations on the digits network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.data import load_data
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.evaluation.features import metric_name
from autoprune.models import build_model
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.materialize import materialize

SAMPLES = 64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = load_data("digits")
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    space = build_search_space(model, data.example_input(1), grid=load_space_config("digitnet").grid, never_prune=[])
    # no BatchNorm recalibration, so a stage pruned nowhere computes exactly the dense features
    config = EvaluatorConfig(fidelity=0, bn_batches=0, measure_latency=False, device="cpu", feature_distortion=True,
                             level_database=False)
    return data, model, space, Evaluator(dense=model, data=data, space=space, never_prune=[], config=config)


def _features(model, data, boundary: str) -> torch.Tensor:
    captured = {}
    handle = dict(model.named_modules())[boundary].register_forward_hook(
        lambda _m, _i, out: captured.setdefault("x", out.detach().clone()))
    with torch.no_grad():
        logits = model.eval()(data.normalize(data.val.x[:SAMPLES]))
    handle.remove()
    return captured["x"], logits


def test_digitnet_has_two_stages_and_both_metrics_are_reported(setup) -> None:
    data, model, space, evaluator = setup
    metrics = evaluator.run(space.dense_candidate(), fidelity=0, seed=0, eval_samples=SAMPLES).metrics
    assert metrics[metric_name("stages.0")] == pytest.approx(0.0, abs=1e-12)
    assert metrics[metric_name("output")] == pytest.approx(0.0, abs=1e-12)


def test_a_stage_pruned_alone_leaves_the_stage_before_it_exact(setup) -> None:
    data, model, space, evaluator = setup
    levels = space.dense_candidate()
    second = [g for g, name in enumerate(space.group_names) if name.startswith("stages.1")]
    levels[second] = space.n_levels - 1
    metrics = evaluator.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES).metrics
    assert metrics[metric_name("stages.0")] == 0.0, "stage 1 reads exactly the dense stage 0's output"
    assert metrics[metric_name("output")] > 0.0


def test_a_narrowed_boundary_counts_its_removed_channels_as_zeros(setup) -> None:
    """The stream group of stage 0 (stem.0) spans into stage 1; pruned, the boundary is
    narrower, and the distortion there is computed at the kept positions, by hand here."""
    data, model, space, evaluator = setup
    levels = space.dense_candidate()
    levels[space.group_names.index("stem.0")] = 4
    metrics = evaluator.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES).metrics
    pruned, keep = materialize(model, space, levels, data.example_input(1), never_prune=[])
    narrow, _ = _features(pruned, data, "stages.0")
    dense, _ = _features(model, data, "stages.0")
    kept = keep["stem.0"]
    assert narrow.shape[1] == len(kept) < dense.shape[1]
    wide = torch.zeros_like(dense)
    wide[:, kept] = narrow
    expected = float(((wide - dense).double() ** 2).sum() / ((dense.double() - dense.double().mean()) ** 2).sum())
    assert metrics[metric_name("stages.0")] == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(metrics[metric_name("output")])


# ---- feature mimicking (EMO-PMS's optional training of a measured sub-network) ----------

@pytest.fixture(scope="module")
def mimicking(setup):
    data, model, space, _ = setup
    config = EvaluatorConfig(fidelity=0, bn_batches=0, measure_latency=False, device="cpu", feature_distortion=True,
                             level_database=False, measurement_training="features")
    return Evaluator(dense=model, data=data, space=space, never_prune=[], config=config)


def _parameters(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(prefix)}


def test_mimicking_trains_only_the_pruned_stage_and_brings_its_features_closer(setup, mimicking) -> None:
    data, model, space, _ = setup
    levels = space.dense_candidate()
    second = [g for g, name in enumerate(space.group_names) if name.startswith("stages.1")]
    levels[second] = space.n_levels // 2
    before = mimicking.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES, measurement=True)
    after = mimicking.run(levels, fidelity=30, seed=0, eval_samples=SAMPLES, measurement=True)
    assert after.metrics["steps"] == 30
    assert after.metrics[metric_name("output")] < 0.8 * before.metrics[metric_name("output")]
    assert after.metrics[metric_name("stages.0")] == 0.0, "the stage before the pruned one stays exactly dense"
    for prefix in ("stem.", "stages.0."):
        unchanged = _parameters(before.model, prefix)
        assert all(torch.equal(v, unchanged[k]) for k, v in _parameters(after.model, prefix).items()), prefix
    learnt = _parameters(after.model, "stages.1.")
    assert any(not torch.equal(v, _parameters(before.model, "stages.1.")[k]) for k, v in learnt.items())


def test_mimicking_a_first_stage_stops_at_its_boundary(setup, mimicking) -> None:
    """Pruning stem.0 (a stream owned by stage 0) trains stage 0 to its boundary; nothing
    after it learns, not even the classifier."""
    data, model, space, _ = setup
    levels = space.dense_candidate()
    levels[space.group_names.index("stem.0")] = space.n_levels // 2
    before = mimicking.run(levels, fidelity=0, seed=0, eval_samples=SAMPLES, measurement=True)
    after = mimicking.run(levels, fidelity=30, seed=0, eval_samples=SAMPLES, measurement=True)
    assert after.metrics[metric_name("stages.0")] < before.metrics[metric_name("stages.0")]
    for prefix in ("stages.1.", "classifier."):
        unchanged = _parameters(before.model, prefix)
        assert all(torch.equal(v, unchanged[k]) for k, v in _parameters(after.model, prefix).items()), prefix
    assert any(not torch.equal(v, _parameters(before.model, "stem.")[k])
               for k, v in _parameters(after.model, "stem.").items())


def test_trials_retrain_on_the_task_whatever_measurements_do(setup, mimicking) -> None:
    data, model, space, evaluator = setup
    levels = space.dense_candidate()
    levels[:] = space.n_levels // 2
    task = evaluator.run(levels, fidelity=5, seed=1, eval_samples=SAMPLES).metrics
    trial = mimicking.run(levels, fidelity=5, seed=1, eval_samples=SAMPLES).metrics
    assert {k: v for k, v in task.items() if "seconds" not in k} == \
        {k: v for k, v in trial.items() if "seconds" not in k}
    measured = mimicking.run(levels, fidelity=5, seed=1, eval_samples=SAMPLES, measurement=True).metrics
    assert measured["loss"] != task["loss"]


def test_mimicking_needs_the_features_it_mimics() -> None:
    with pytest.raises(ValueError, match="needs feature_distortion"):
        EvaluatorConfig(measurement_training="features")
    with pytest.raises(ValueError, match="measurement_training must be one of"):
        EvaluatorConfig(measurement_training="feature")


def test_only_the_boundaries_of_the_searchers_sub_networks_are_measured(setup) -> None:
    """digitnet's two stages merged into one sub-network: only the output is measured."""
    data, model, space, _ = setup
    config = EvaluatorConfig(fidelity=0, bn_batches=0, measure_latency=False, device="cpu", feature_distortion=True,
                             feature_sub_networks=1, level_database=False)
    evaluator = Evaluator(dense=model, data=data, space=space, never_prune=[], config=config)
    metrics = evaluator.run(space.dense_candidate(), fidelity=0, seed=0, eval_samples=SAMPLES).metrics
    assert sorted(k for k in metrics if k.startswith("feature_distortion:")) == [metric_name("output")]
