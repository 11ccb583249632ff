"""Fashion-MNIST: 70,000 grayscale 28x28 images of clothing in 10 classes, from IDX files.

This is the benchmark task: real images, small enough to retrain a candidate in
seconds, hard enough that where the channels are removed changes accuracy by tens of
points at aggressive budgets. It installs offline from Debian
(``apt-get install dataset-fashion-mnist``), which is where the default folder points;
any folder with the four original files (gzip-compressed or not) works too, including
the ``FashionMNIST/raw`` folder torchvision downloads into.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoprune.data.assemble import build_task_data, images_from_numpy, labels_from_numpy
from autoprune.data.base import Split, TaskData
from autoprune.data.idx import read_idx
from autoprune.errors import UserError

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")

#: The four files of the original distribution, each possibly with ``.gz`` appended.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

NUM_CLASSES = 10

#: Mean and std of the 60,000 training images scaled to [0, 1] (the values in common
#: use, which this loader reproduces to four digits); fixed so that normalisation does
#: not depend on the validation seed and loading stays fast.
MEAN = (0.2860,)
STD = (0.3530,)

_SUBFOLDERS = ("", "FashionMNIST/raw", "fashion-mnist")


def load_fashion_mnist(*, root: str | Path | None = None, val_fraction: float, seed: int) -> TaskData:
    """Fashion-MNIST as uint8 (N, 1, 28, 28) images; validation is held out of the 60,000."""
    folder = Path(root) if root is not None else DEFAULT_ROOT
    paths = _find_files(folder)
    train = _read_split(paths["train_images"], paths["train_labels"])
    test = _read_split(paths["test_images"], paths["test_labels"])
    return build_task_data(
        name="fashion-mnist",
        train=train,
        test=test,
        num_classes=NUM_CLASSES,
        scale=255.0,
        val_fraction=val_fraction,
        seed=seed,
        stats=(MEAN, STD),
    )


def _find_files(folder: Path) -> dict[str, Path]:
    """Paths of the four files in ``folder`` or a well-known subfolder of it."""
    if not folder.is_dir():
        raise UserError(
            f"The Fashion-MNIST folder {folder} does not exist; install it with "
            "'apt-get install dataset-fashion-mnist' or pass --data-root FOLDER holding the IDX files."
        )
    for sub in _SUBFOLDERS:
        found = {key: _existing(folder / sub, base) for key, base in FILES.items()}
        if all(path is not None for path in found.values()):
            return {key: path for key, path in found.items() if path is not None}
    missing = [base for key, base in FILES.items() if _existing(folder, base) is None]
    raise UserError(
        f"Fashion-MNIST files missing in {folder}: {', '.join(f'{m}[.gz]' for m in missing)}; install them with "
        "'apt-get install dataset-fashion-mnist' or pass --data-root FOLDER holding the four IDX files."
    )


def _existing(folder: Path, base: str) -> Path | None:
    """The file ``base`` or ``base.gz`` in ``folder``, preferring the uncompressed one."""
    for name in (base, base + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_split(images_path: Path, labels_path: Path) -> Split:
    """One split from its image and label files, checked against each other."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(
            f"{images_path} holds {images.dtype} values of shape {images.shape}, not uint8 images (N, H, W); "
            "check that it is an image file, not a label file."
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise UserError(
            f"{labels_path} holds {labels.dtype} values of shape {labels.shape}, not uint8 labels (N,); "
            "check that it is a label file, not an image file."
        )
    if len(images) != len(labels):
        raise UserError(
            f"{labels_path} has {len(labels)} labels but {images_path.name} has {len(images)} images; "
            "the files come from different downloads, replace both."
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise UserError(
            f"{labels_path} has label {int(labels.max())}, outside Fashion-MNIST's 0..{NUM_CLASSES - 1}; "
            "check that it is the original file."
        )
    return Split(images_from_numpy(images[:, None, :, :]), labels_from_numpy(labels))
