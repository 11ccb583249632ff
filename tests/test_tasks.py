"""The dense model's first training reports its progress."""

from __future__ import annotations

import logging

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
