"""Digits: split sizes, determinism, and that the three splits partition the data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from autoprune.data import TaskData, load_data


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_data("digits")


def _rows(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    """Each image with its label as bytes, sorted: a multiset that ignores order."""
    return sorted(bytes(img.numpy().tobytes()) + bytes([int(label)]) for img, label in zip(x, y))


def test_split_sizes_and_shape(digits: TaskData) -> None:
    assert digits.name == "digits"
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == pytest.approx(0.2 * 1797, abs=10)
    assert len(digits.val) == pytest.approx(0.15 * (1797 - len(digits.test)), abs=10)
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.scale == 16.0
    assert digits.train.x.dtype == torch.uint8 and int(digits.train.x.max()) == 16
    for split in (digits.train, digits.val, digits.test):
        assert set(split.y.tolist()) == set(range(10))  # stratified: every class everywhere


def test_splits_partition_the_original_images(digits: TaskData) -> None:
    bunch = load_digits()
    original = _rows(torch.from_numpy(bunch.images.astype(np.uint8)[:, None]), torch.from_numpy(bunch.target))
    xs = torch.cat([digits.train.x, digits.val.x, digits.test.x])
    ys = torch.cat([digits.train.y, digits.val.y, digits.test.y])
    assert _rows(xs, ys) == original  # same multiset, so no image sits in two splits


def test_deterministic_and_seed_moves_only_validation(digits: TaskData) -> None:
    again = load_data("digits")
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert digits.mean == again.mean and digits.std == again.std
    other = load_data("digits", seed=1)
    assert torch.equal(other.test.x, digits.test.x)
    assert not torch.equal(other.val.x, digits.val.x)


def test_normalisation_statistics_come_from_the_training_part(digits: TaskData) -> None:
    normalised = digits.normalize(digits.train.x)
    assert float(normalised.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(normalised.std()) == pytest.approx(1.0, abs=1e-3)


def test_val_fraction_is_honoured() -> None:
    data = load_data("digits", val_fraction=0.5)
    assert len(data.val) == pytest.approx(len(data.train), abs=12)
