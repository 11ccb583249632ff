"""The evaluator's parts against hand computations, and failures as trials."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoprune.data import load_data
from autoprune.evaluation.evaluator import EvaluationFailed, Evaluator, EvaluatorConfig
from autoprune.evaluation.training import (
    TeacherCache,
    TrainConfig,
    distillation_loss,
    predict,
    recalibrate_batchnorm,
    resolve_placement,
    score,
    train,
)
from autoprune.executors.base import Job, run_job
from autoprune.models import build_model
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def evaluator(digits) -> Evaluator:
    torch.manual_seed(0)
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    config = load_space_config("digitnet")
    space = build_search_space(model, digits.example_input(1), grid=config.grid, never_prune=[])
    return Evaluator(dense=model, data=digits, space=space, never_prune=[],
                     config=EvaluatorConfig(fidelity=5, bn_batches=2, latency_repeats=3, device="cpu"))


def test_recalibration_gives_the_plain_mean_and_variance_of_the_batches(digits) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()
    model[1].running_mean.fill_(5.0)
    model[1].running_var.fill_(7.0)
    used = recalibrate_batchnorm(model, digits, batches=3, batch_size=32, seed=1)
    assert used == 96
    # the same three batches, by hand: mean of per-batch means and of unbiased per-batch variances
    order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(1))
    means, variances = [], []
    with torch.no_grad():
        for b in range(3):
            x = digits.normalize(digits.train.x[order[b * 32 : (b + 1) * 32]])
            out = model[0](x)
            means.append(out.mean(dim=(0, 2, 3)))
            variances.append(out.var(dim=(0, 2, 3), unbiased=True))
    torch.testing.assert_close(model[1].running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, torch.stack(variances).mean(0), rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1, "the momentum is restored afterwards"
    assert not model.training


def test_distillation_loss_matches_its_definition() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    t, w = 3.0, 0.25
    p_teacher = F.softmax(teacher / t, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / t, dim=1))).sum(1).mean()
    expected = (1 - w) * F.cross_entropy(student, labels) + w * t * t * kl
    got = distillation_loss(student, labels, teacher, weight=w, temperature=t)
    torch.testing.assert_close(got, expected)
    assert distillation_loss(student, labels, None, weight=w, temperature=t) == F.cross_entropy(student, labels)
    assert distillation_loss(student, labels, student, weight=1.0, temperature=t).abs() < 1e-6


def test_kl_to_dense_is_zero_for_the_dense_model_itself(evaluator, digits) -> None:
    scores = score(evaluator.dense, digits, digits.val, reference=evaluator._dense_logits)
    assert scores["kl_to_dense"] == pytest.approx(0.0, abs=1e-6)
    assert scores["eval_samples"] == len(digits.val)
    assert score(evaluator.dense, digits, digits.val, limit=50)["eval_samples"] == 50


def test_logit_mse_to_dense_matches_its_definition(evaluator, digits) -> None:
    assert score(evaluator.dense, digits, digits.val, reference=evaluator._dense_logits)["mse_to_dense"] == \
        pytest.approx(0.0, abs=1e-10)
    shifted = evaluator._dense_logits.clone()
    shifted[3] += 2.0  # one sample's logits all off by 2: squared error 4 on that sample
    scores = score(evaluator.dense, digits, digits.val, reference=shifted)
    assert scores["worst_mse_to_dense"] == pytest.approx(4.0, rel=1e-4)
    assert scores["mse_to_dense"] == pytest.approx(4.0 / len(digits.val), rel=1e-3)


def test_continuing_training_resumes_from_the_given_weights(evaluator) -> None:
    levels = evaluator.space.uniform_candidate(6)
    first = evaluator.run(levels, fidelity=5, seed=0)
    state = first.model.state_dict()
    again = evaluator.run(levels, fidelity=0, seed=0, init_state=state)
    for key, value in again.model.state_dict().items():
        torch.testing.assert_close(value, state[key])  # zero more steps: exactly the weights handed in
    assert again.metrics["accuracy"] == first.metrics["accuracy"]
    more = evaluator.run(levels, fidelity=5, seed=0, init_state=state)
    assert more.metrics["steps"] == 5
    assert more.metrics["samples"] == 5 * evaluator.config.train.batch_size, "no BatchNorm pass when continuing"
    changed = any(not torch.equal(v, state[k]) for k, v in more.model.state_dict().items() if v.is_floating_point())
    assert changed


def test_evaluation_records_its_cost(evaluator) -> None:
    metrics = evaluator.evaluate(evaluator.space.uniform_candidate(4), fidelity=3, seed=0)
    assert metrics["steps"] == 3
    assert metrics["samples"] == 3 * 64 + 2 * 64
    assert metrics["seconds"] > 0 and metrics["threads"] >= 1
    assert metrics["flops"] == evaluator.space.cost("flops", evaluator.space.uniform_candidate(4))


def test_diverging_training_is_a_failed_trial(digits, evaluator) -> None:
    hot = Evaluator(dense=evaluator.dense, data=digits, space=evaluator.space, never_prune=[],
                    config=EvaluatorConfig(fidelity=5, bn_batches=1, train=TrainConfig(lr=1e12), device="cpu"))
    result = run_job(hot, Job(trial_id=7, levels=hot.space.uniform_candidate(3), fidelity=20, seed=0))
    assert result.status == "failed" and "diverged" in result.error and result.trial_id == 7


def test_a_candidate_that_cannot_be_built_is_a_failed_trial(digits, evaluator) -> None:
    other = build_model("resnet20", in_channels=1, image_size=8, num_classes=10).eval()
    mismatched = Evaluator(dense=other, data=digits, space=evaluator.space, never_prune=[],
                           config=EvaluatorConfig(fidelity=1, device="cpu"))
    result = run_job(mismatched, Job(trial_id=1, levels=evaluator.space.uniform_candidate(2), fidelity=1, seed=0))
    assert result.status == "failed" and "could not build the candidate" in result.error


def test_placement_defaults_to_the_cpu_here() -> None:
    placement = resolve_placement("auto")
    if torch.cuda.is_available():
        assert placement.device == "cuda" and placement.amp and placement.channels_last
    else:
        assert placement.device == "cpu" and not placement.amp and not placement.channels_last
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_placement("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_evaluation_with_mixed_precision(digits, evaluator) -> None:
    gpu = Evaluator(dense=evaluator.dense, data=digits, space=evaluator.space, never_prune=[],
                    config=EvaluatorConfig(fidelity=20, bn_batches=2, device="cuda"))
    metrics = gpu.evaluate(evaluator.space.uniform_candidate(4), fidelity=20, seed=0)
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1


def test_the_level_database_changes_speed_only(digits, evaluator) -> None:
    scratch = Evaluator(dense=evaluator.dense, data=digits, space=evaluator.space, never_prune=[],
                        config=EvaluatorConfig(fidelity=5, bn_batches=2, measure_latency=False, device="cpu",
                                               level_database=False))
    cached = Evaluator(dense=evaluator.dense, data=digits, space=evaluator.space, never_prune=[],
                       config=EvaluatorConfig(fidelity=5, bn_batches=2, measure_latency=False, device="cpu"))
    for level in (2, 9, 12):  # the database is built at the second candidate
        levels = evaluator.space.uniform_candidate(level)
        levels[0] = 5
        a = scratch.run(levels, fidelity=4, seed=1)
        b = cached.run(levels, fidelity=4, seed=1)
        assert a.keep_indices == b.keep_indices
        for metric in ("accuracy", "loss", "kl_to_dense", "flops", "params"):
            assert a.metrics[metric] == b.metrics[metric], metric
    assert cached._database is not None and scratch._database is None


def test_a_teacher_cache_trains_like_the_teacher_and_runs_it_once_per_sample(digits) -> None:
    torch.manual_seed(0)
    teacher = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    student = build_model("digitnet", in_channels=1, image_size=8, num_classes=10)
    config = TrainConfig(lr=0.05, batch_size=32, distill_weight=0.7)
    a, b = copy.deepcopy(student), copy.deepcopy(student)
    first = train(a, digits, steps=6, config=config, seed=3, teacher=teacher)
    cache = TeacherCache(teacher, len(digits.train), 10)
    second = train(b, digits, steps=6, config=config, seed=3, teacher=cache)
    assert second.final_loss == pytest.approx(first.final_loss, rel=1e-4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert cache.computed == int(cache.known.sum()) == 6 * 32  # 192 distinct samples of 1437
    known = cache.known.nonzero().squeeze(1)
    torch.testing.assert_close(cache.logits[known], predict(teacher, digits, digits.train)[known], rtol=1e-4,
                               atol=1e-5)
    train(copy.deepcopy(student), digits, steps=6, config=config, seed=3, teacher=cache)
    assert cache.computed == 6 * 32  # the same seed draws the same batches: nothing new to compute
    with pytest.raises(ValueError, match="rows"):
        train(b, digits, steps=1, config=config, seed=3, teacher=TeacherCache(teacher, 10, 10))


def test_the_teacher_cache_changes_speed_only(digits, evaluator) -> None:
    def make(cache: bool) -> Evaluator:
        return Evaluator(dense=evaluator.dense, data=digits, space=evaluator.space, never_prune=[],
                         config=EvaluatorConfig(fidelity=5, bn_batches=2, measure_latency=False, device="cpu",
                                                train=TrainConfig(distill_weight=0.5), cache_teacher_logits=cache))

    cached, plain = make(True), make(False)
    for level in (3, 9):
        a = cached.run(evaluator.space.uniform_candidate(level), fidelity=4, seed=1)
        b = plain.run(evaluator.space.uniform_candidate(level), fidelity=4, seed=1)
        assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=1e-4)
    assert cached._teacher_cache is not None and cached._teacher_cache.computed == 4 * 64
    assert plain._teacher_cache is None
