"""The dispatch of ``load_data`` and the data fingerprint."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from autoprune.data import DATA_NAMES, Split, data_fingerprint, load_data
from autoprune.errors import UserError


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown data 'mnist'; use one of digits, fashion-mnist, cifar10, cifar100, folder"):
        load_data("mnist")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "folder"])
def test_sources_that_need_a_root_say_so(name: str) -> None:
    assert name in DATA_NAMES
    with pytest.raises(UserError, match="pass --data-root FOLDER"):
        load_data(name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"root": "/tmp"}, "--data-root does not apply to --data digits"),
        ({"image_size": 16}, "--image-size applies only to --data folder"),
        ({"val_fraction": 1.0}, "validation fraction must be a number between 0 and 1"),
        ({"val_fraction": 0}, "validation fraction"),
        ({"seed": 1.5}, "seed must be a whole number"),
    ],
)
def test_options_a_source_cannot_use_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_data("digits", **kwargs)


def test_fingerprint_is_stable_and_sensitive() -> None:
    data = load_data("digits")
    fingerprint = data_fingerprint(data)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert data_fingerprint(load_data("digits")) == fingerprint
    assert data_fingerprint(load_data("digits", seed=3)) != fingerprint
    assert data_fingerprint(dataclasses.replace(data, name="renamed")) == fingerprint
    assert data_fingerprint(dataclasses.replace(data, mean=(0.0,))) != fingerprint
    x = data.test.x.clone()
    x[-1, 0, 7, 7] += 1  # one pixel of the last test image
    assert data_fingerprint(dataclasses.replace(data, test=Split(x, data.test.y))) != fingerprint
    as_bf16 = dataclasses.replace(data, test=Split(data.test.x.to(torch.bfloat16), data.test.y))
    assert data_fingerprint(as_bf16) != fingerprint
