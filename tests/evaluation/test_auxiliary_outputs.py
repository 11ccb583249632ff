"""Models whose training-mode output holds auxiliary logits (GoogLeNet, Inception v3) retrain:
the main logits are scored and distilled, each auxiliary classifier adds its weighted
cross-entropy, and an output with no logits is refused in one sentence."""

from __future__ import annotations

import re
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoprune.data import load_data
from autoprune.errors import UserError
from autoprune.evaluation.outputs import AUX_WEIGHT, UnusableOutput, split_output
from autoprune.evaluation.training import TrainConfig, train

Outputs = namedtuple("Outputs", ["logits", "aux_logits2", "aux_logits1"])  # GoogLeNetOutputs' layout


class AuxClassifier(nn.Module):
    """A linear classifier with an auxiliary classifier that returns only in training mode."""

    def __init__(self, features: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, 16), nn.ReLU())
        self.fc = nn.Linear(16, classes)
        self.aux = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | Outputs:
        logits = self.fc(self.body(x))
        return Outputs(logits, self.aux(x.flatten(1)), None) if self.training else logits


def test_the_main_logits_come_first_and_switched_off_heads_are_skipped() -> None:
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    assert split_output(a)[0] is a and split_output(a)[1] == []
    main, auxiliary = split_output(Outputs(a, b, None))
    assert main is a and len(auxiliary) == 1 and auxiliary[0] is b


@pytest.mark.parametrize("output, says", [
    ({"out": torch.zeros(2, 3)}, "a dict, not a tensor of logits"),
    ((torch.zeros(2, 3), torch.zeros(2, 5)), "a tuple whose later item is (2, 5), not logits shaped like its first"),
    ((), "a tuple, not a tensor of logits"),
])
def test_an_output_without_logits_is_refused_saying_what_it_is(output: object, says: str) -> None:
    with pytest.raises(UnusableOutput, match=rf"^{re.escape(says)}"):
        split_output(output)


def test_retraining_adds_the_weighted_auxiliary_loss_and_trains_the_auxiliary_head() -> None:
    data = load_data("digits")
    torch.manual_seed(0)
    model = AuxClassifier()
    config = TrainConfig(lr=1e-9, weight_decay=0.0, batch_size=32, warmup_fraction=0.0)
    outcome = train(model, data, steps=1, config=config, seed=3)
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(3))[:32]
    x, y = data.normalize(data.train.x[idx]), data.train.y[idx]
    with torch.no_grad():
        model.train()
        out = model(x)
        model.eval()
    expected = F.cross_entropy(out.logits, y) + AUX_WEIGHT * F.cross_entropy(out.aux_logits2, y)
    assert outcome.final_loss == pytest.approx(float(expected), rel=1e-5)
    assert model.aux.weight.grad is not None and float(model.aux.weight.grad.abs().sum()) > 0


def test_a_factory_whose_training_output_holds_no_logits_is_refused_before_the_search() -> None:
    from autoprune.tasks import _check_output_shape

    class DictInTraining(AuxClassifier):
        def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
            logits = self.fc(self.body(x))
            return {"out": logits} if self.training else logits

    with pytest.raises(UserError, match=r"^model 'mine' outputs a dict, not a tensor of logits or a tuple whose "
                                        r"first item is one in training mode; autoprune retrains on \(batch, 10\) "
                                        r"logits, optionally followed by auxiliary logits of that shape\.$"):
        _check_output_shape(DictInTraining(), load_data("digits"), "mine")
