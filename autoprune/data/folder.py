"""Images from a class-per-folder tree, the layout most people keep their own data in.

Two layouts are read::

    root/<class>/<images>                      20% held out as test, by a fixed seed
    root/train/<class>/...  root/test/<class>/...   the given splits (same classes)

A tree that has both ``train`` and ``test`` folders is always read as the second layout.
Classes are the subfolder names in sorted order (label 0 is the first); folders whose
name starts with a dot (``.ipynb_checkpoints``) are ignored, and images may sit in
nested folders below their class folder.

Images are decoded with Pillow, EXIF-rotated, and resized to ``image_size`` squared by
stretching (not cropping, which could cut away the object); they are kept as RGB uint8,
or as one channel when every image is grayscale. Only files with a common image
extension are read. An image file Pillow cannot decode is skipped with one logged
warning for all of them, because one broken file in thousands should not stop a run;
a class left without any readable image is an error, since its label would be missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from autoprune.data.assemble import build_task_data, split_off_test
from autoprune.data.base import Split, TaskData
from autoprune.errors import UserError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

DEFAULT_IMAGE_SIZE = 32

#: Bands that carry no colour; an image made of one of these (plus alpha) is grayscale.
_GRAY_BANDS = {"L", "1", "I", "F"}


def load_image_folder(
    *, root: str | Path, image_size: int = DEFAULT_IMAGE_SIZE, val_fraction: float, seed: int
) -> TaskData:
    """The images under ``root`` as uint8 (N, C, image_size, image_size), C being 3 or 1."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"--image-size must be a positive whole number of pixels, got {image_size!r}.")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"The image folder {root} does not exist; pass --data-root FOLDER holding one folder per class.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_classes = _class_names(root / "train")
        test_classes = _class_names(root / "test")
        if train_classes != test_classes:
            only_train = sorted(set(train_classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(train_classes))
            raise UserError(
                f"The class folders of {root / 'train'} and {root / 'test'} differ "
                f"(only in train: {only_train or 'none'}, only in test: {only_test or 'none'}); "
                "give both splits the same class folders."
            )
        train_x, train_y, train_gray = _read_tree(root / "train", train_classes, image_size=image_size)
        test_x, test_y, test_gray = _read_tree(root / "test", train_classes, image_size=image_size)
        gray = train_gray and test_gray
        train, test = _to_split(train_x, train_y, gray), _to_split(test_x, test_y, gray)
        classes = train_classes
    else:
        classes = _class_names(root)
        x, y, gray = _read_tree(root, classes, image_size=image_size)
        train, test = split_off_test(*_as_tensors(x, y, gray))
    logger.info("read %d training and %d test images of %d classes from %s", len(train), len(test), len(classes), root)
    return build_task_data(
        name="folder",
        train=train,
        test=test,
        num_classes=len(classes),
        scale=255.0,
        val_fraction=val_fraction,
        seed=seed,
    )


def _class_names(folder: Path) -> list[str]:
    """Sorted names of the visible subfolders; at least two, or there is nothing to classify."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise UserError(f"{folder} has no class subfolders; put the images of each class in a folder named after it.")
    if len(names) == 1:
        raise UserError(f"{folder} has only one class folder ({names[0]!r}); a classifier needs at least two classes.")
    return names


def _read_tree(folder: Path, classes: list[str], *, image_size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Images (N, S, S, 3) uint8, labels (N,), and whether every image was grayscale."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    all_gray = True
    failed: list[str] = []
    for label, name in enumerate(classes):
        files = _image_files(folder / name)
        if not files:
            raise UserError(
                f"Class folder {folder / name} has no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder."
            )
        read = 0
        for path in files:
            decoded = _decode(path, image_size=image_size)
            if decoded is None:
                failed.append(str(path))
                continue
            pixels, gray = decoded
            images.append(pixels)
            labels.append(label)
            all_gray = all_gray and gray
            read += 1
        if read == 0:
            raise UserError(
                f"None of the {len(files)} image files in {folder / name} could be decoded; "
                "check that they are valid images."
            )
    if failed:
        shown = ", ".join(failed[:5]) + (", ..." if len(failed) > 5 else "")
        logger.warning("skipped %d image files under %s that Pillow could not decode: %s", len(failed), folder, shown)
    return np.stack(images), np.asarray(labels, dtype=np.int64), all_gray


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, in a fixed order, hidden ones left out."""
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files)


def _decode(path: Path, *, image_size: int) -> tuple[np.ndarray, bool] | None:
    """Pixels (S, S, 3) uint8 and whether the image is grayscale, or None if it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft(image.mode, (image_size, image_size))  # lets JPEG decode at a reduced size
            image = ImageOps.exif_transpose(image)
            colour_bands = [band for band in image.getbands() if band != "A"]
            gray = image.mode != "P" and len(colour_bands) == 1 and colour_bands[0] in _GRAY_BANDS
            if image.mode.startswith("I") or image.mode == "F":
                image = _eight_bit(image)
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8), gray
    except Exception as exc:  # any decoder failure on a user's file means "unreadable", nothing more
        logger.debug("cannot decode %s: %s", path, exc)
        return None


def _eight_bit(image: "Image.Image") -> "Image.Image":
    """A wide grayscale image (16-bit PNG or TIFF, 32-bit integer or float TIFF) as 8 bits.

    Pillow's ``convert`` clips values above 255, which turns every 16-bit image black and
    white. 16-bit modes are scaled by their range; 32-bit integers are taken as 16-bit when
    they exceed 255 and as 8-bit otherwise; floats as [0, 1] when they stay within it."""
    from PIL import Image

    wide = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and wide.max(initial=0) > 255):
        wide = wide / 257.0
    elif image.mode == "F" and wide.max(initial=0) <= 1.0:
        wide = wide * 255.0
    return Image.fromarray(np.clip(np.round(wide), 0, 255).astype(np.uint8), mode="L")


def _as_tensors(x: np.ndarray, y: np.ndarray, gray: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, S, S) uint8 images, one channel when all are gray, and int64 labels."""
    channels_first = x.transpose(0, 3, 1, 2)
    if gray:
        channels_first = channels_first[:, :1]
    return torch.from_numpy(np.ascontiguousarray(channels_first)), torch.from_numpy(y)


def _to_split(x: np.ndarray, y: np.ndarray, gray: bool) -> Split:
    """A split of the given images and labels."""
    return Split(*_as_tensors(x, y, gray))
