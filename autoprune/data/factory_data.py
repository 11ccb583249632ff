"""A user's own data, from a ``package.module:factory`` that returns ``(train, test)``.

The factory is called with no arguments. Each of ``train`` and ``test`` is either

- an ``(x, y)`` pair of tensors or numpy arrays: ``x`` of shape (N, C, H, W), or
  (N, H, W) for grayscale, as uint8 (0..255) or floats; ``y`` integer labels (N,); or
- a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, which is read once, item
  by item, into tensors: everything is held in memory so that a candidate's retraining
  never waits on a data loader.

The images are the model's input as given, because a user's factory usually returns
data already preprocessed the way their checkpoint was trained: floats are used unchanged
(scale 1, mean 0, std 1 per channel), and uint8 images are only divided by 255, as
torchvision's ``ToTensor`` does. No per-channel mean/std is computed or applied, unlike
the built-in data sets; the recipe of an export records this (scale, mean 0, std 1).

The user's code is the input here, so whatever it returns is checked up front and any
mismatch is answered with one sentence naming the spec, what came back, and what is
expected, rather than a shape error deep inside a training step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from autoprune.data.assemble import build_task_data
from autoprune.data.base import Split, TaskData, identity_stats
from autoprune.errors import UserError
from autoprune.factory import import_object

_EXPECTED = (
    "it must return (train, test), each an (x, y) pair of tensors or numpy arrays "
    "(x: N,C,H,W or N,H,W; y: N integer labels) or a torch Dataset of (image, label) pairs"
)


def load_factory_data(spec: str, *, val_fraction: float, seed: int) -> TaskData:
    """Call the factory named by ``spec`` and turn its ``(train, test)`` into a task's data."""
    factory = import_object(spec, what="--data")
    try:
        result = factory()
    except Exception as exc:  # the user's code failing is bad input, not a bug of ours
        raise UserError(
            f"--data {spec} raised {type(exc).__name__}: {exc}; fix the factory so it runs with no arguments."
        ) from exc
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise UserError(f"--data {spec} returned {_describe(result)}; {_EXPECTED}.")
    train = _to_split(result[0], spec=spec, part="train")
    test = _to_split(result[1], spec=spec, part="test")
    if train.x.shape[1:] != test.x.shape[1:] or train.x.dtype != test.x.dtype:
        raise UserError(
            f"--data {spec} returned train images of {_describe(train.x[0])} but test images of "
            f"{_describe(test.x[0])}; both splits must have the same image shape and dtype."
        )
    num_classes = int(max(int(train.y.max()), int(test.y.max()))) + 1
    if num_classes < 2:
        raise UserError(f"--data {spec} returned only label 0; a classifier needs labels of at least two classes.")
    return build_task_data(
        name=spec,
        train=train,
        test=test,
        num_classes=num_classes,
        scale=255.0 if train.x.dtype == torch.uint8 else 1.0,
        val_fraction=val_fraction,
        seed=seed,
        stats=identity_stats(int(train.x.shape[1])),  # the data as given (module docstring)
    )


def _to_split(value: Any, *, spec: str, part: str) -> Split:
    """One returned part, as checked tensors."""
    where = f"--data {spec} returned a {part} part"
    if isinstance(value, Dataset):
        x, y = _materialise(value, where=where)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = _as_tensor(value[0], where=f"{where} whose x"), _as_tensor(value[1], where=f"{where} whose y")
    else:
        raise UserError(f"{where} of {_describe(value)}; {_EXPECTED}.")
    return Split(_check_images(x, where=where), _check_labels(y, n=len(x), where=where))


def _materialise(dataset: Dataset, *, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, label) of a Dataset, stacked into two tensors."""
    if isinstance(dataset, IterableDataset):
        items: Any = dataset
    else:
        try:
            items = (dataset[i] for i in range(len(dataset)))  # type: ignore[arg-type]
        except TypeError:
            raise UserError(f"{where} that is a Dataset without len(); give it __len__ or return (x, y) tensors.") from None
    images: list[torch.Tensor] = []
    labels: list[int] = []
    try:
        for index, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise UserError(f"{where} whose item {index} is {_describe(item)}, not an (image, label) pair.")
            image = _as_tensor(item[0], where=f"{where} whose item {index} has an image that")
            if images and (image.shape != images[0].shape or image.dtype != images[0].dtype):
                raise UserError(
                    f"{where} whose item {index} has an image of {_describe(image)} but item 0 has "
                    f"{_describe(images[0])}; all images must have the same shape and dtype."
                )
            images.append(image)
            labels.append(_as_label(item[1], where=f"{where} whose item {index} has a label"))
    except UserError:
        raise
    except Exception as exc:  # the user's __getitem__ failed
        raise UserError(f"{where} that is a Dataset which raised {type(exc).__name__}: {exc}; fix the Dataset.") from exc
    if not images:
        raise UserError(f"{where} that is an empty Dataset; it needs at least a few images per class.")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _as_tensor(value: Any, *, where: str) -> torch.Tensor:
    """A tensor from a tensor or a numeric numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("=")))
    hint = "; convert images to tensors (for example torchvision's ToTensor)" if "image" in where else ""
    raise UserError(f"{where} is {_describe(value)}, not a tensor or numeric numpy array{hint}.")


def _as_label(value: Any, *, where: str) -> int:
    """An integer class label from a Python int, a numpy integer or a one-element integer tensor."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise UserError(f"{where} of {_describe(value)}, not an integer class index.")


def _check_images(x: torch.Tensor, *, where: str) -> torch.Tensor:
    """(N, C, H, W) uint8 or float32 images with finite values."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise UserError(f"{where} with images of {_describe(x)}; images must be (N, C, H, W) or (N, H, W).")
    if len(x) == 0:
        raise UserError(f"{where} with no images; each split needs at least a few images per class.")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise UserError(
            f"{where} with images of {_describe(x)}, which look channels-last; "
            "return them as (N, C, H, W), for example x.permute(0, 3, 1, 2)."
        )
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise UserError(f"{where} with images of {_describe(x)}; images must be uint8 (0..255) or floating point.")
    x = x.to(torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise UserError(f"{where} with NaN or infinite pixel values; clean the images first.")
    return x


def _check_labels(y: torch.Tensor, *, n: int, where: str) -> torch.Tensor:
    """(N,) int64 non-negative labels, one per image."""
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"{where} with labels of {_describe(y)}; labels must be a flat (N,) array with N={n}.")
    if y.is_floating_point() or y.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise UserError(f"{where} with labels of {_describe(y)}; labels must be integer class indices.")
    y = y.to(torch.int64)
    if int(y.min()) < 0:
        raise UserError(f"{where} with negative label {int(y.min())}; labels must be class indices 0, 1, 2, ...")
    return y


def _describe(value: Any) -> str:
    """A short description of what came back, for error messages."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        dtype = str(value.dtype).replace("torch.", "")
        return f"shape {tuple(value.shape)} and dtype {dtype}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"
