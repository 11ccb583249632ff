"""Turn a source's (train, test) arrays into a :class:`TaskData`, the same way for all.

Every source hands over its training and test images; what happens next is shared so
that no source can get it subtly different: the validation slice is cut from the
training data by the caller's seed (stratified), normalisation statistics, where the
source does not fix them (a user's factory fixes them to "as given"), come from what is
left for training (so the held-out slice stays held out), and tiny data sets
that leave a split empty are refused with a sentence instead of failing later inside
a training loop.
"""

from __future__ import annotations

import numpy as np
import torch

from autoprune.data.base import Split, TaskData, channel_stats, split_off_validation
from autoprune.errors import UserError

#: Seed of the fixed train/test cut for sources that ship without one (digits, a flat
#: image folder). It never follows the user's ``seed``: test accuracy reported by two
#: runs with different seeds must be measured on the same images to be comparable.
TEST_SPLIT_SEED = 0

#: Fraction of the images held out as test data where a source has no test split.
TEST_FRACTION = 0.2


def split_off_test(x: torch.Tensor, y: torch.Tensor) -> tuple[Split, Split]:
    """Cut a source without a test split into (train, test), stratified, by the fixed seed."""
    return split_off_validation(x, y, fraction=TEST_FRACTION, seed=TEST_SPLIT_SEED)


def check_fraction(val_fraction: float) -> None:
    """Refuse a validation fraction that cannot split anything."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise UserError(f"The validation fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}.")


def build_task_data(
    *,
    name: str,
    train: Split,
    test: Split,
    num_classes: int,
    scale: float,
    val_fraction: float,
    seed: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> TaskData:
    """Hold out ``val_fraction`` of ``train`` by ``seed`` and wrap all three splits.

    ``stats`` are the (mean, std) per channel of ``x / scale``; when omitted they are
    computed on the training part that remains after the validation slice is removed,
    which is deterministic for a given seed.
    """
    check_fraction(val_fraction)
    _check_labels(name=name, train=train, test=test, num_classes=num_classes)
    if len(test) == 0:
        raise UserError(f"Data {name!r} has no test images; add more images (at least a few per class).")
    fit, val = split_off_validation(train.x, train.y, fraction=val_fraction, seed=seed)
    if len(fit) == 0 or len(val) == 0:
        raise UserError(
            f"Data {name!r} has too few training images ({len(train)}) to hold out a validation slice "
            f"of {val_fraction:g}; add more images (at least two per class)."
        )
    if stats is None:
        stats = channel_stats(fit.x, scale)
    mean, std = stats
    channels = int(train.x.shape[1])
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"stats have {len(mean)} means and {len(std)} stds for {channels} channels")
    return TaskData(
        name=name,
        train=fit,
        val=val,
        test=test,
        num_classes=int(num_classes),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        scale=float(scale),
    )


def _check_labels(*, name: str, train: Split, test: Split, num_classes: int) -> None:
    """Labels must index into the classes; a stray label would crash the loss much later."""
    for split_name, split in (("training", train), ("test", test)):
        if len(split) == 0:
            continue
        low, high = int(split.y.min()), int(split.y.max())
        if low < 0 or high >= num_classes:
            raise UserError(
                f"Data {name!r} has {split_name} labels from {low} to {high}, outside 0..{num_classes - 1}; "
                "check that the files belong to this data set."
            )


def labels_from_numpy(labels: np.ndarray) -> torch.Tensor:
    """Integer labels of any width as the int64 tensor the loss expects."""
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def images_from_numpy(images: np.ndarray) -> torch.Tensor:
    """A contiguous tensor over ``images``, copied only when needed.

    Arrays made by ``np.frombuffer`` are read-only, which torch refuses to wrap; the
    copy is skipped otherwise because a data set's pixels can be hundreds of megabytes.
    """
    array = np.ascontiguousarray(images)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)
