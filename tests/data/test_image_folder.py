"""Class-per-folder images written with Pillow here: both layouts, grayscale, and every refusal."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from autoprune.data import load_data
from autoprune.errors import UserError

COLOURS = {"cat": (200, 10, 50), "dog": (0, 120, 255), "eel": (30, 30, 30)}


def write_tree(
    root: Path, *, per_class: int = 5, mode: str = "RGB", classes: dict[str, tuple[int, int, int]] = COLOURS
) -> None:
    """Solid-colour images of odd sizes, so resizing must keep the colour exactly."""
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            fill = colour if mode == "RGB" else colour[0]
            Image.new(mode, (10 + i, 6 + 2 * i), fill).save(root / name / f"{i}.png")


def test_flat_layout_splits_off_a_test_part(tmp_path: Path) -> None:
    write_tree(tmp_path)
    write_tree(tmp_path / ".ipynb_checkpoints")  # hidden folders are not classes
    data = load_data("folder", root=tmp_path)
    assert data.name == "folder" and data.num_classes == 3 and data.input_shape == (3, 32, 32)
    assert data.train.x.dtype == torch.uint8 and data.scale == 255.0
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 3)
    assert data.val.y.tolist() == [0, 1, 2] and data.test.y.tolist() == [0, 1, 2]  # stratified
    for split in (data.train, data.val, data.test):
        for image, label in zip(split.x, split.y):
            colour = COLOURS[sorted(COLOURS)[int(label)]]  # labels follow sorted class names
            assert torch.equal(image, torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32))


def test_flat_layout_test_split_ignores_the_seed(tmp_path: Path) -> None:
    write_tree(tmp_path, per_class=10)
    a, b = load_data("folder", root=tmp_path, seed=0), load_data("folder", root=tmp_path, seed=5)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)


def test_train_test_layout_and_image_size(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", per_class=4)
    write_tree(tmp_path / "test", per_class=2)
    data = load_data("folder", root=tmp_path, image_size=8)
    assert data.input_shape == (3, 8, 8)
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 6
    assert data.test.y.tolist() == [0, 0, 1, 1, 2, 2]


def test_all_grayscale_gives_one_channel(tmp_path: Path) -> None:
    write_tree(tmp_path, mode="L")
    data = load_data("folder", root=tmp_path, image_size=4)
    assert data.input_shape == (1, 4, 4) and len(data.mean) == 1
    assert set(data.test.x.unique().tolist()) <= {200, 0, 30}


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits_not_clipped(tmp_path: Path) -> None:
    import numpy as np

    for name, level in {"dark": 0x1000, "light": 0xC000}.items():  # 16 and 192 in 8 bits
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((6, 6), level, dtype=np.uint16)).save(tmp_path / name / f"{i}.png")
    assert Image.open(tmp_path / "dark" / "0.png").mode.startswith("I")
    data = load_data("folder", root=tmp_path, image_size=4)
    assert data.input_shape == (1, 4, 4)
    assert set(data.train.x.unique().tolist()) == {16, 191}


def test_thirty_two_bit_images_in_eight_bit_range_keep_their_values(tmp_path: Path) -> None:
    import numpy as np

    for name, level in {"dark": 20, "light": 200}.items():
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((6, 6), level, dtype=np.int32), mode="I").save(tmp_path / name / f"{i}.tif")
    assert Image.open(tmp_path / "dark" / "0.tif").mode == "I"
    assert set(load_data("folder", root=tmp_path, image_size=4).train.x.unique().tolist()) == {20, 200}


def test_one_colour_image_makes_all_rgb(tmp_path: Path) -> None:
    write_tree(tmp_path, mode="L")
    Image.new("RGB", (5, 5), (1, 2, 3)).save(tmp_path / "cat" / "colour.png")
    assert load_data("folder", root=tmp_path).input_shape == (3, 32, 32)


def test_unreadable_file_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tree(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "dog" / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        data = load_data("folder", root=tmp_path)
    assert len(data.train) + len(data.val) + len(data.test) == 15
    assert "skipped 1 image files" in caplog.text and "broken.png" in caplog.text


def test_class_without_readable_images_is_refused(tmp_path: Path) -> None:
    write_tree(tmp_path)
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="None of the 1 image files in .*fox could be decoded"):
        load_data("folder", root=tmp_path)
    (tmp_path / "fox" / "a.jpg").unlink()
    with pytest.raises(UserError, match="fox has no image files"):
        load_data("folder", root=tmp_path)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_data("folder", root=tmp_path / "missing")
    with pytest.raises(UserError, match="has no class subfolders"):
        load_data("folder", root=tmp_path)
    with pytest.raises(UserError, match="--data-root"):
        load_data("folder")
    with pytest.raises(UserError, match="--image-size must be a positive"):
        load_data("folder", root=tmp_path, image_size=0)


def test_train_and_test_classes_must_match(tmp_path: Path) -> None:
    write_tree(tmp_path / "train")
    write_tree(tmp_path / "test", classes={"cat": (1, 1, 1), "dog": (2, 2, 2), "fox": (3, 3, 3)})
    with pytest.raises(UserError, match=r"only in train: \['eel'\], only in test: \['fox'\]"):
        load_data("folder", root=tmp_path)
