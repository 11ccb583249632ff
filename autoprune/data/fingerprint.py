"""A short content hash of a task's data, for caching what was trained on it.

A trained dense model may be reused only for the same data: same images, labels, split
and normalisation. The normalisation (scale, mean, std) is hashed with the pixels, so
the same images fed to a model differently (a factory's data used as given, where older
versions normalised it per channel) never share a cached model. Every byte is hashed
rather than a sample: sha256 runs at over a gigabyte a second on current CPUs (about
0.1 s for all of CIFAR-10), and a sample would let an edit to an unsampled image reuse
a model trained on other data. The data's name
is left out on purpose: the same data reached under another name (a renamed factory
module) may share the cache.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from autoprune.data.base import TaskData

#: Hex digits kept: 64 bits, plenty to tell a user's data sets apart.
FINGERPRINT_LENGTH = 16


def data_fingerprint(data: TaskData) -> str:
    """A 16-hex-digit sha256 prefix that changes when the data or its normalisation does."""
    digest = hashlib.sha256()
    header = f"classes={data.num_classes};scale={data.scale!r};mean={data.mean!r};std={data.std!r}"
    digest.update(header.encode())
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        shapes = f";{name}:{tuple(split.x.shape)}:{split.x.dtype}:{tuple(split.y.shape)}:{split.y.dtype};"
        digest.update(shapes.encode())
        digest.update(_memory(split.x))
        digest.update(_memory(split.y))
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def _memory(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array, without a copy when it is contiguous.

    Viewing as bytes works for every dtype, bfloat16 included, which numpy cannot hold.
    """
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()
