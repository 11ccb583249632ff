"""Measured latency: settings recorded, bad arguments refused, the caller's model left in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.evaluation.latency import measure_latency


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()


def test_records_how_it_was_measured() -> None:
    latency = measure_latency(small_net(), (1, 8, 8), batch_size=3, repeats=4, warmup=1)
    assert latency.median_ms > 0 and latency.iqr_ms >= 0
    assert (latency.batch_size, latency.repeats, latency.device) == (3, 4, "cpu")
    assert latency.threads == torch.get_num_threads()


def test_measures_in_eval_mode_without_gradients() -> None:
    net = small_net()
    before = net[1].running_mean.clone()
    measure_latency(net, (1, 8, 8), repeats=2)
    assert torch.equal(net[1].running_mean, before)  # eval mode: BatchNorm statistics untouched


def test_a_model_on_another_device_is_timed_as_a_copy() -> None:
    # "meta" stands in for a GPU on this CPU-only machine: the model must be moved to be timed
    net = small_net()
    latency = measure_latency(net, (1, 8, 8), repeats=2, device="meta")
    assert latency.device == "meta"
    assert all(p.device.type == "cpu" for p in net.parameters())


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"batch_size": 0}])
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="need repeats"):
        measure_latency(small_net(), (1, 8, 8), **kwargs)
