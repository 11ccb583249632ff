"""Data sources: every built-in data set and a user's factory, loaded into a :class:`TaskData`.

``load_data`` is the one entry the rest of autoprune uses; it answers a name (or a
``package.module:factory`` spec) and the few options a source takes, and refuses an
option a source would silently ignore, because a flag that does nothing is a run that
does not do what its user believes.
"""

from __future__ import annotations

from pathlib import Path

from autoprune.data.assemble import check_fraction
from autoprune.data.base import Split, TaskData, channel_stats, split_off_validation
from autoprune.data.cifar import load_cifar10, load_cifar100
from autoprune.data.digits import load_digits_data
from autoprune.data.factory_data import load_factory_data
from autoprune.data.fashion_mnist import load_fashion_mnist
from autoprune.data.fingerprint import data_fingerprint
from autoprune.data.folder import DEFAULT_IMAGE_SIZE, load_image_folder
from autoprune.errors import UserError
from autoprune.factory import is_factory_spec

__all__ = [
    "DATA_NAMES",
    "Split",
    "TaskData",
    "channel_stats",
    "data_fingerprint",
    "load_data",
    "split_off_validation",
]

#: The built-in data sources, in the order they are listed to users.
DATA_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "folder")

#: Sources that cannot guess where their files are.
_NEED_ROOT = {"cifar10", "cifar100", "folder"}


def load_data(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> TaskData:
    """The data named ``name``, with ``val_fraction`` of its training images held out by ``seed``.

    ``root`` is the folder of the files (required for cifar10, cifar100 and folder;
    fashion-mnist defaults to Debian's install location); ``image_size`` is the side
    images of a folder are resized to (default 32). The test split never depends on
    ``seed``, so test accuracies of different runs are comparable.
    """
    if not isinstance(name, str) or not name:
        raise UserError(f"--data must name a data set ({', '.join(DATA_NAMES)}) or package.module:factory, got {name!r}.")
    check_fraction(val_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"The seed must be a whole number, got {seed!r}.")
    if is_factory_spec(name):
        _refuse(name, root=root, image_size=image_size)
        return load_factory_data(name, val_fraction=val_fraction, seed=seed)
    if name not in DATA_NAMES:
        raise UserError(
            f"unknown data {name!r}; use one of {', '.join(DATA_NAMES)}, or package.module:factory for your own."
        )
    if root is not None:
        root = Path(root).expanduser()  # a path from a config file is not expanded by a shell
    if name in _NEED_ROOT and root is None:
        raise UserError(f"--data {name} needs the folder of its files; pass --data-root FOLDER.")
    if name != "folder" and image_size is not None:
        raise UserError(f"--image-size applies only to --data folder, not to {name}; leave it out.")
    if name == "digits":
        _refuse(name, root=root, image_size=None)
        return load_digits_data(val_fraction=val_fraction, seed=seed)
    if name == "fashion-mnist":
        return load_fashion_mnist(root=root, val_fraction=val_fraction, seed=seed)
    assert root is not None  # for the type checker: every source below was checked above
    if name == "cifar10":
        return load_cifar10(root=root, val_fraction=val_fraction, seed=seed)
    if name == "cifar100":
        return load_cifar100(root=root, val_fraction=val_fraction, seed=seed)
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    return load_image_folder(root=root, image_size=size, val_fraction=val_fraction, seed=seed)


def _refuse(name: str, *, root: str | Path | None, image_size: int | None) -> None:
    """Options a source has no use for are refused rather than ignored."""
    if root is not None:
        raise UserError(f"--data-root does not apply to --data {name}; leave it out.")
    if image_size is not None:
        raise UserError(f"--image-size does not apply to --data {name}; leave it out.")
