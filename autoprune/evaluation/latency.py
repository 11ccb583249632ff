"""Measured latency of a model: warm-up, then the median and spread of repeated runs.

Follows the practice of ``torch.utils.benchmark``: eval mode, no autograd, a fixed
input shape and thread count, and the settings recorded next to the number so two
measurements can be compared only when they were taken alike.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from autoprune.evaluation.allocator import keep_freed_memory


@dataclass(frozen=True)
class Latency:
    """Milliseconds per forward pass of ``batch_size`` inputs."""

    median_ms: float
    iqr_ms: float
    batch_size: int
    threads: int
    device: str
    repeats: int
    #: how the process's allocator treats freed buffers (see :mod:`autoprune.evaluation.allocator`)
    allocator: str

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    device: str = "cpu",
) -> Latency:
    """Time ``model`` on random input of ``(batch_size, *input_shape)`` on ``device``.

    A model that lives elsewhere is timed as a copy moved to ``device``: the caller's
    model stays where it was (the dense model is shared with the rest of the run)."""
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    allocator = keep_freed_memory()
    tensors = [*model.parameters(), *model.buffers()]
    if tensors and tensors[0].device != torch.device(device):
        model = copy.deepcopy(model).to(device)
    model = model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Latency(
        median_ms=float(median), iqr_ms=float(q3 - q1), batch_size=batch_size,
        threads=torch.get_num_threads(), device=device, repeats=repeats, allocator=allocator,
    )
