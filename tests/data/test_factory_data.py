"""A user's ``module:factory`` data: each accepted form, and garbage answered with a UserError."""

from __future__ import annotations

import dataclasses
import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.data import data_fingerprint, load_data
from autoprune.data.base import channel_stats
from autoprune.errors import UserError

_COUNTER = itertools.count()

_HEADER = """
import numpy as np
import torch
from torch.utils.data import Dataset

def arrays(n, dtype=np.uint8, shape=(6, 5)):
    rng = np.random.default_rng(n)
    x = rng.integers(0, 256, size=(n, *shape)).astype(dtype)
    return x, np.arange(n) % 4
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a module with ``body`` under a fresh name (imports are cached) and return its spec prefix."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(body: str) -> str:
        name = f"user_data_{next(_COUNTER)}"
        (tmp_path / f"{name}.py").write_text(_HEADER + textwrap.dedent(body))
        return name

    return write


def test_uint8_grayscale_arrays(user_module: Callable[[str], str]) -> None:
    module = user_module("def make():\n    return arrays(40), arrays(12)\n")
    data = load_data(f"{module}:make")
    assert data.name == f"{module}:make"
    assert data.input_shape == (1, 6, 5) and data.scale == 255.0 and data.num_classes == 4
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 12
    x, y = np.random.default_rng(12).integers(0, 256, size=(12, 6, 5)).astype(np.uint8), np.arange(12) % 4
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(x)) and data.test.y.tolist() == y.tolist()
    assert (data.mean, data.std) == ((0.0,), (1.0,)), "uint8 is only divided by 255, as ToTensor does"
    assert torch.equal(data.normalize(data.test.x), data.test.x.float() / 255)


def test_float_tensors(user_module: Callable[[str], str]) -> None:
    module = user_module("""
        def make():
            x, y = arrays(30, np.float64, (3, 4, 4))
            return (torch.from_numpy(x / 255), torch.from_numpy(y)), [torch.from_numpy(x[:8] / 255), y[:8]]
    """)
    data = load_data(f"{module}:make")
    assert data.scale == 1.0 and data.train.x.dtype == torch.float32 and data.input_shape == (3, 4, 4)
    assert data.test.y.dtype == torch.int64
    assert (data.mean, data.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_float_data_is_the_model_input_unchanged(user_module: Callable[[str], str]) -> None:
    """Preprocessed floats (here far from mean 0 / std 1) must reach the model bit for bit."""
    module = user_module("""
        def make():
            rng = np.random.default_rng(1)
            x = torch.from_numpy(rng.normal(3.0, 5.0, size=(40, 2, 5, 5)).astype(np.float32))
            return (x[:30], torch.arange(30) % 3), (x[30:], torch.arange(10) % 3)
    """)
    data = load_data(f"{module}:make")
    x = torch.from_numpy(np.random.default_rng(1).normal(3.0, 5.0, size=(40, 2, 5, 5)).astype(np.float32))
    assert torch.equal(data.normalize(data.test.x), x[30:])
    for split in (data.train, data.val):
        assert torch.equal(data.normalize(split.x), split.x)
    assert torch.equal(data.example_input(4), data.train.x[:4])
    assert (data.mean, data.std) != channel_stats(data.train.x, 1.0), "the statistics were not applied"


def test_the_fingerprint_tells_data_as_given_from_normalised_data(user_module: Callable[[str], str]) -> None:
    """A dense model cached for per-channel-normalised input must not be reused for input as given."""
    module = user_module("def make():\n    return arrays(40, shape=(2, 5, 5)), arrays(12, shape=(2, 5, 5))\n")
    data = load_data(f"{module}:make")
    mean, std = channel_stats(data.train.x, data.scale)
    normalised = dataclasses.replace(data, mean=mean, std=std)  # what earlier versions built
    assert data_fingerprint(data) != data_fingerprint(normalised)
    assert data_fingerprint(load_data(f"{module}:make")) == data_fingerprint(data)


def test_dataset_is_materialised(user_module: Callable[[str], str]) -> None:
    module = user_module("""
        class Pairs(Dataset):
            def __init__(self, n):
                self.x, self.y = arrays(n, np.float32, (1, 3, 3))
            def __len__(self):
                return len(self.y)
            def __getitem__(self, i):
                return torch.from_numpy(self.x[i]), int(self.y[i])

        def make():
            return Pairs(20), Pairs(8)
    """)
    data = load_data(f"{module}:make")
    x, y = np.random.default_rng(8).integers(0, 256, size=(8, 1, 3, 3)).astype(np.float32), np.arange(8) % 4
    assert torch.equal(data.test.x, torch.from_numpy(x)) and data.test.y.tolist() == y.tolist()


GARBAGE = {
    "a string": ('"nope"', "returned a str; it must return \\(train, test\\)"),
    "three parts": ("arrays(8), arrays(8), arrays(8)", "returned a tuple of 3"),
    "flat images": ("(np.zeros((8, 30), np.uint8), np.zeros(8, int)), arrays(8)", "images of shape \\(8, 30\\)"),
    "float labels": ("(arrays(8)[0], np.zeros(8)), arrays(8)", "labels must be integer class indices"),
    "short labels": ("(arrays(8)[0], np.zeros(7, int)), arrays(8)", "labels must be a flat \\(N,\\) array with N=8"),
    "channels last": ("arrays(8, shape=(6, 6, 3)), arrays(8, shape=(6, 6, 3))", "look channels-last"),
    "int images": ("arrays(8, np.int32), arrays(8, np.int32)", "must be uint8 \\(0..255\\) or floating point"),
    "split mismatch": ("arrays(8), arrays(8, shape=(5, 5))", "both splits must have the same image shape"),
    "list images": ("([[1]] * 8, np.zeros(8, int)), arrays(8)", "whose x is a list of 8 .*, not a tensor"),
    "one class": ("(arrays(8)[0], np.zeros(8, int)), (arrays(4)[0], np.zeros(4, int))", "at least two classes"),
    "nan": ("(np.full((8, 2, 2), np.nan), np.arange(8) % 2), arrays(8, np.float32, (2, 2))", "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_is_refused(user_module: Callable[[str], str], case: str) -> None:
    returned, message = GARBAGE[case]
    module = user_module(f"def make():\n    return {returned}\n")
    with pytest.raises(UserError, match=message) as info:
        load_data(f"{module}:make")
    assert f"--data {module}:make" in str(info.value)


def test_failing_factory_and_bad_dataset(user_module: Callable[[str], str]) -> None:
    module = user_module("""
        def broken():
            raise RuntimeError("disk on fire")

        class Bad(Dataset):
            def __len__(self):
                return 3
            def __getitem__(self, i):
                return "image", 1.5

        def bad_items():
            return Bad(), Bad()
    """)
    with pytest.raises(UserError, match="raised RuntimeError: disk on fire"):
        load_data(f"{module}:broken")
    with pytest.raises(UserError, match="item 0 has an image that is a str, not a tensor"):
        load_data(f"{module}:bad_items")
    with pytest.raises(UserError, match="has no attribute"):
        load_data(f"{module}:missing")
