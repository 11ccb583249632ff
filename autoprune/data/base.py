"""In-memory image classification data: the splits every task is made of.

Every data source (digits, Fashion-MNIST, CIFAR, image folders, a user's factory) ends
as a :class:`TaskData`: raw images kept compact (``uint8`` where the source is bytes) plus
the normalisation that turns a batch into model input. Built-in sources are normalised
per channel to mean 0 and std 1 (:func:`channel_stats`); a user's factory data is the
model's input as given (:func:`identity_stats`), because a checkpoint trained on it
expects exactly that. Keeping everything in memory is what makes a few hundred
retraining steps per candidate cheap, and it is one object to ship to a worker.

Three splits, with distinct jobs:

- ``train``: retraining and BatchNorm recalibration;
- ``val``: a held-out slice *of the training data*, by a fixed seed, on which candidates
  are ranked during search;
- ``test``: touched only when a model is reported or exported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Images ``x`` (N, C, H, W; uint8 or float) and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError(f"labels must be (N,) with N={len(self.x)}, got shape {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task and how to turn raw images into model input.

    ``normalize`` computes ``(x / scale - mean) / std`` per channel; with scale 1, mean 0
    and std 1 it returns the images unchanged (as float32).
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (float32) for a batch of raw images."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() / self.scale - mean) / std

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A normalised batch of training images, for tracing and FLOP counting."""
        return self.normalize(self.train.x[:batch_size])


def split_off_validation(x: torch.Tensor, y: torch.Tensor, *, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split training data into (train, held-out) by a fixed seed, stratified by class.

    Stratifying keeps every class in the held-out slice even for small data sets.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_held = max(1, int(round(fraction * len(idx)))) if len(idx) > 1 else 0
        held.append(idx[:n_held])
    held_idx = np.sort(np.concatenate(held))
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    keep_idx = np.flatnonzero(mask)
    as_t = torch.from_numpy
    return Split(x[as_t(keep_idx)], y[as_t(keep_idx)]), Split(x[as_t(held_idx)], y[as_t(held_idx)])


def channel_stats(x: torch.Tensor, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``x / scale``, for normalisation."""
    xf = x.float() / scale
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def identity_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean 0 and std 1 per channel: a normalisation that leaves ``x / scale`` as it is.

    For data the user already prepared as their model expects; statistics computed from
    it would shift and rescale inputs the model was never trained on.
    """
    return (0.0,) * channels, (1.0,) * channels
