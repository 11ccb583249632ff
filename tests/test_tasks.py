"""Tasks: the dense model's first training reports its progress, checkpoints are matched to
the model, and a dense model near chance is flagged."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from autoprune.data import load_data
from autoprune.evaluation.training import TrainConfig, train
from autoprune.models import build_model
from autoprune.tasks import TrainingProgress


def test_train_reports_every_step_with_its_loss() -> None:
    digits = load_data("digits")
    torch.manual_seed(0)
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10)
    seen: list[tuple[int, float]] = []
    outcome = train(model, digits, steps=4, config=TrainConfig(batch_size=16), seed=0,
                    on_step=lambda done, loss: seen.append((done, loss)))
    assert [done for done, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][1] == outcome.final_loss


def test_progress_is_logged_every_twentieth_with_the_time_left(caplog) -> None:
    now = [0.0]
    progress = TrainingProgress(200, "digitnet", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="autoprune.tasks"):
        for step in range(1, 201):
            now[0] = step * 3.0  # 3 s a step
            progress(step, 0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20
    assert lines[0] == "training the dense digitnet: step 10/200 (5%), loss 0.500, about 10 min left"
    assert lines[-1].startswith("training the dense digitnet: step 200/200 (100%)")
    assert lines[-1].endswith("about 0 s left")


def test_short_trainings_still_end_with_a_line(caplog) -> None:
    progress = TrainingProgress(7, "digitnet", clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="autoprune.tasks"):
        for step in range(1, 8):
            progress(step, 1.0)
    assert caplog.records[-1].getMessage().startswith("training the dense digitnet: step 7/7 (100%)")


# --- checkpoints: BatchNorm counters may be missing, nothing else ---------------------------------


def _bn_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def test_checkpoint_without_batchnorm_counters_is_accepted(tmp_path) -> None:
    from safetensors.torch import save_file

    from autoprune.tasks import _checkpoint_state

    trained = _bn_net()
    trained[1].running_mean.fill_(0.25)
    state = {k: v for k, v in trained.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) == len(trained.state_dict()) - 1
    save_file(state, str(tmp_path / "w.safetensors"))
    model = _bn_net()
    loaded = _checkpoint_state(str(tmp_path / "w.safetensors"), model, "net")
    model.load_state_dict(loaded)
    assert torch.equal(model[1].running_mean, torch.full((4,), 0.25))
    assert int(loaded["1.num_batches_tracked"]) == 0


def test_any_other_missing_key_is_still_refused_in_one_sentence(tmp_path) -> None:
    from autoprune.errors import UserError
    from autoprune.tasks import _checkpoint_state

    state = {k: v for k, v in _bn_net().state_dict().items() if not k.endswith("running_var")}
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"missing \['1.running_var'\]\.$"):
        _checkpoint_state(str(tmp_path / "w.pt"), _bn_net(), "net")


def test_a_long_list_of_missing_keys_ends_in_one_full_stop(tmp_path) -> None:
    from autoprune.errors import UserError
    from autoprune.tasks import _checkpoint_state

    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(UserError) as caught:
        _checkpoint_state(str(tmp_path / "w.pt"), _bn_net(), "net")
    message = str(caught.value)
    assert "missing ['0.bias', '0.weight', '1.bias'] and 5 more; unexpected ['other.weight']." in message
    assert message.endswith("'other.weight'].") and ".." not in message


def test_missing_keys_listed_last_end_in_one_full_stop(tmp_path) -> None:
    from autoprune.errors import UserError
    from autoprune.tasks import _checkpoint_state

    torch.save({}, tmp_path / "w.pt")
    with pytest.raises(UserError) as caught:
        _checkpoint_state(str(tmp_path / "w.pt"), _bn_net(), "net")
    assert str(caught.value).endswith(" and 5 more.") and ".." not in str(caught.value)


# --- a dense model near chance is searched with a warning -----------------------------------------


def _task(num_classes: int, source: str):
    from autoprune.tasks import ModelSpec, Task

    data = SimpleNamespace(num_classes=num_classes)
    spec = ModelSpec(name="usermod:net", in_channels=1, image_size=8, num_classes=num_classes)
    return Task(data=data, model_spec=spec, dense=None, space_config=None, weights_source=source)


@pytest.mark.parametrize(("classes", "accuracy", "warned"), [
    (10, 0.1, True), (10, 0.19, True), (10, 0.191, False), (10, 0.9, False),
    (2, 0.55, True), (2, 0.56, False), (2, 0.74, False),  # a trained 74% binary model is no alarm
])
def test_near_chance_means_closing_at_most_a_tenth_of_the_gap_to_perfect(
        caplog, classes: int, accuracy: float, warned: bool) -> None:
    from autoprune.tasks import warn_if_near_chance

    with caplog.at_level(logging.WARNING, logger="autoprune.tasks"):
        assert warn_if_near_chance(accuracy, _task(classes, "factory")) is warned
    assert len(caplog.records) == int(warned)


def test_the_warning_names_accuracy_chance_and_causes(caplog) -> None:
    from autoprune.tasks import warn_if_near_chance

    with caplog.at_level(logging.WARNING, logger="autoprune.tasks"):
        warn_if_near_chance(0.1, _task(10, "factory"))
        warn_if_near_chance(0.3, _task(4, "checkpoint:w.pt"))
    factory, checkpoint = (r.getMessage() for r in caplog.records)
    assert "accuracy is 0.1000, near chance (0.1000 for 10 classes)" in factory
    assert "without --checkpoint" in factory and "factory data is used as given" in factory
    assert "accuracy is 0.3000, near chance (0.2500 for 4 classes)" in checkpoint
    assert "without --checkpoint" not in checkpoint
    assert "normalised per channel to mean 0 / std 1" in checkpoint


def test_stale_batchnorm_statistics_are_named_not_the_inputs(caplog) -> None:
    from autoprune.tasks import warn_if_near_chance

    with caplog.at_level(logging.WARNING, logger="autoprune.tasks"):
        assert warn_if_near_chance(0.81, _task(10, "factory"), as_given=0.10) is True
        assert warn_if_near_chance(0.81, _task(10, "factory"), as_given=0.80) is False
    (message,) = (r.getMessage() for r in caplog.records)
    assert "0.1000 with its own BatchNorm statistics but 0.8100 after recalibrating" in message
    assert "inputs" not in message


# --- the dense reference is measured as candidates are --------------------------------------------


def test_the_dense_model_is_scored_after_the_candidates_batchnorm_recalibration() -> None:
    """A dense model whose running statistics do not fit its weights (here scrambled) scores
    near chance as given; the reference, like every candidate, is scored after recalibration."""
    from autoprune.setup_run import score_dense
    from autoprune.tasks import prepare_task

    task = prepare_task(model="digitnet", data="digits")
    given = score_dense(task, bn_batches=0, batch_size=64, seed=0)
    assert given["bn_recalibration_samples"] == 0 and "accuracy_as_given" not in given
    for module in task.dense.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 5)
            module.running_var.fill_(1e-4)
    stale = dict(task.dense.state_dict())
    scores = score_dense(task, bn_batches=8, batch_size=64, seed=0)
    assert scores["bn_recalibration_samples"] == 8 * 64
    assert scores["accuracy_as_given"] < 0.5 < scores["accuracy"]
    assert abs(scores["accuracy"] - given["accuracy"]) < 0.05
    assert all(torch.equal(v, stale[k]) for k, v in task.dense.state_dict().items())  # the teacher is untouched
