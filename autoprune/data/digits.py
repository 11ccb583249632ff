"""scikit-learn's handwritten digits: 1,797 grayscale 8x8 images in 10 classes.

The data ship inside scikit-learn, so this is the source that always works, offline and
in seconds: the default for examples and tests. It is too easy to tell pruning
allocations apart; Fashion-MNIST is the benchmark.

The pixels are counts from 0 to 16 (the original 32x32 bitmaps were pooled over 4x4
blocks), stored as uint8 with ``scale=16`` so that normalisation sees [0, 1] like every
other source. Digits has no test split of its own; 20% of the images are held out by a
fixed seed, stratified by class, and never change with the caller's seed.
"""

from __future__ import annotations

import numpy as np
import torch

from autoprune.data.assemble import build_task_data, split_off_test
from autoprune.data.base import TaskData

NUM_CLASSES = 10

#: The largest pixel value of the data set; dividing by it maps pixels to [0, 1].
SCALE = 16.0


def load_digits_data(*, val_fraction: float, seed: int) -> TaskData:
    """Digits as uint8 (N, 1, 8, 8) images; mean and std come from the training part."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

    bunch = load_digits()
    images = np.asarray(bunch.images)
    if images.min() < 0 or images.max() > SCALE:
        raise ValueError(f"digits pixels expected in 0..16, got {images.min()}..{images.max()}")
    x = torch.from_numpy(np.rint(images).astype(np.uint8)[:, None, :, :])
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train, test = split_off_test(x, y)
    return build_task_data(
        name="digits",
        train=train,
        test=test,
        num_classes=NUM_CLASSES,
        scale=SCALE,
        val_fraction=val_fraction,
        seed=seed,
    )
