"""CIFAR-10 and CIFAR-100 from their *binary* distribution, read as plain bytes.

The Python distribution of CIFAR is a set of pickles, and unpickling a downloaded file
runs whatever code it carries; the binary distribution holds the same images as
fixed-size records, so it is the only one read here. A record is the label byte(s)
followed by 3,072 pixel bytes: the 1,024 red values of the 32x32 image row by row,
then the green, then the blue, which is already the (C, H, W) layout models take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoprune.data.assemble import build_task_data, images_from_numpy, labels_from_numpy
from autoprune.data.base import Split, TaskData
from autoprune.errors import UserError

_PIXELS = 3 * 32 * 32
_HOME = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant's files live and how its records are laid out."""

    name: str
    subfolder: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int
    label_index: int
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def record_size(self) -> int:
        """Bytes per image: its label byte(s) plus 3,072 pixel bytes."""
        return self.label_bytes + _PIXELS


# Mean and std: per-channel statistics of each training set scaled to [0, 1], the values
# in common use. Fixed rather than computed so normalisation does not depend on the
# validation seed, and loading does not spend a float copy of 150 MB of pixels.
CIFAR10 = CifarFormat(
    name="cifar10",
    subfolder="cifar-10-batches-bin",
    archive="cifar-10-binary.tar.gz",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test_files=("test_batch.bin",),
    label_bytes=1,
    label_index=0,
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = CifarFormat(
    name="cifar100",
    subfolder="cifar-100-binary",
    archive="cifar-100-binary.tar.gz",
    train_files=("train.bin",),
    test_files=("test.bin",),
    label_bytes=2,
    label_index=1,  # byte 0 is the coarse label (20 superclasses), byte 1 the fine one
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)


def load_cifar10(*, root: str | Path, val_fraction: float, seed: int) -> TaskData:
    """CIFAR-10 as uint8 (N, 3, 32, 32) images in 10 classes."""
    return load_cifar(CIFAR10, root=root, val_fraction=val_fraction, seed=seed)


def load_cifar100(*, root: str | Path, val_fraction: float, seed: int) -> TaskData:
    """CIFAR-100 as uint8 (N, 3, 32, 32) images with its 100 fine labels."""
    return load_cifar(CIFAR100, root=root, val_fraction=val_fraction, seed=seed)


def load_cifar(fmt: CifarFormat, *, root: str | Path, val_fraction: float, seed: int) -> TaskData:
    """One CIFAR variant from ``root`` (the extracted folder, or the folder that holds it)."""
    folder = _find_folder(fmt, Path(root))
    train = _read_files(fmt, [folder / name for name in fmt.train_files])
    test = _read_files(fmt, [folder / name for name in fmt.test_files])
    return build_task_data(
        name=fmt.name,
        train=train,
        test=test,
        num_classes=fmt.num_classes,
        scale=255.0,
        val_fraction=val_fraction,
        seed=seed,
        stats=(fmt.mean, fmt.std),
    )


def read_cifar_records(path: str | Path, *, fmt: CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 of one binary batch file."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"Cannot read {path} ({exc.strerror or exc}); check the path and its permissions.") from None
    if raw.size == 0 or raw.size % fmt.record_size != 0:
        raise UserError(
            f"{path} has {raw.size} bytes, not a whole number of {fmt.name} records of {fmt.record_size} bytes; "
            f"it is truncated or belongs to another data set, so extract {fmt.archive} again."
        )
    records = raw.reshape(-1, fmt.record_size)
    labels = records[:, fmt.label_index].copy()
    images = records[:, fmt.label_bytes :].reshape(-1, 3, 32, 32)
    if int(labels.max()) >= fmt.num_classes:
        raise UserError(
            f"{path} has label {int(labels.max())}, outside {fmt.name}'s 0..{fmt.num_classes - 1}; "
            f"check that it comes from {fmt.archive}."
        )
    return images, labels


def _read_files(fmt: CifarFormat, paths: list[Path]) -> Split:
    """The records of several batch files, concatenated in the given order."""
    parts = [read_cifar_records(path, fmt=fmt) for path in paths]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return Split(images_from_numpy(images), labels_from_numpy(labels))


def _find_folder(fmt: CifarFormat, root: Path) -> Path:
    """``root`` itself when it holds the files, else its well-known subfolder."""
    if not root.is_dir():
        raise UserError(
            f"The {fmt.name} folder {root} does not exist; download {fmt.archive} from {_HOME}, "
            "extract it, and pass --data-root FOLDER."
        )
    needed = fmt.train_files + fmt.test_files
    for folder in (root, root / fmt.subfolder):
        if all((folder / name).is_file() for name in needed):
            return folder
    folder = root / fmt.subfolder if (root / fmt.subfolder).is_dir() else root
    missing = [name for name in needed if not (folder / name).is_file()]
    hint = ""
    if any(root.glob("*-py*")) or (folder / "batches.meta").exists() or (folder / "meta").exists():
        hint = " (the Python version of CIFAR is not read, because it is made of pickles)"
    raise UserError(
        f"{fmt.name} files missing in {folder}: {', '.join(missing)}; download the binary version "
        f"{fmt.archive} from {_HOME}{hint}, extract it, and pass --data-root FOLDER."
    )
