"""CIFAR binary batches written record by record here: pixels, channel order and labels come back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.data import load_data
from autoprune.data.cifar import CIFAR10, CIFAR100, read_cifar_records
from autoprune.errors import UserError


def hwc_images(n: int, seed: int) -> np.ndarray:
    """Random (N, 32, 32, 3) images, the layout of a decoded picture."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def record(labels: bytes, image_hwc: np.ndarray) -> bytes:
    """One record as the CIFAR page describes it: labels, then the red, green and blue planes."""
    planes = b"".join(np.ascontiguousarray(image_hwc[:, :, c]).tobytes() for c in range(3))
    assert len(planes) == 3072
    return labels + planes


def write_cifar10(folder: Path, *, per_file: int = 20) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True)
    written = {}
    for index, name in enumerate(CIFAR10.train_files + CIFAR10.test_files):
        images = hwc_images(per_file, seed=index)
        labels = [(i + index) % 10 for i in range(per_file)]
        (folder / name).write_bytes(b"".join(record(bytes([y]), img) for img, y in zip(images, labels)))
        written[name] = (images, labels)
    return written


def test_cifar10_records_come_back_exactly(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-bin")
    images, labels = read_cifar_records(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin", fmt=CIFAR10)
    expected_images, expected_labels = written["data_batch_3.bin"]
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == expected_labels
    np.testing.assert_array_equal(images, expected_images.transpose(0, 3, 1, 2))
    # channel 0 is red: one pixel checked against the HWC picture by hand
    assert images[4, 0, 7, 30] == expected_images[4, 7, 30, 0]
    assert images[4, 2, 31, 0] == expected_images[4, 31, 0, 2]


@pytest.mark.parametrize("inside", [True, False])
def test_cifar10_through_load_data(tmp_path: Path, inside: bool) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-bin")
    root = tmp_path / "cifar-10-batches-bin" if inside else tmp_path
    data = load_data("cifar10", root=root)
    assert data.name == "cifar10" and data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert len(data.train) + len(data.val) == 100 and len(data.test) == 20
    test_images, test_labels = written["test_batch.bin"]
    assert torch.equal(data.test.x, torch.from_numpy(test_images.transpose(0, 3, 1, 2).copy()))
    assert data.test.y.tolist() == test_labels


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    for seed, name in enumerate(("train.bin", "test.bin")):
        images = hwc_images(20, seed=seed)
        fine = [(7 * i + 1) % 100 for i in range(20)] if name == "test.bin" else [i % 5 for i in range(20)]
        records = [record(bytes([i % 20, fine[i]]), img) for i, img in enumerate(images)]
        (folder / name).write_bytes(b"".join(records))
    images, labels = read_cifar_records(folder / "test.bin", fmt=CIFAR100)
    assert labels.tolist() == [(7 * i + 1) % 100 for i in range(20)]
    np.testing.assert_array_equal(images, hwc_images(20, seed=1).transpose(0, 3, 1, 2))
    data = load_data("cifar100", root=tmp_path)
    assert data.num_classes == 100 and data.test.y.tolist() == labels.tolist()


def test_wrong_size_file_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="data_batch_2.bin has 61360 bytes, not a whole number of cifar10 records"):
        load_data("cifar10", root=tmp_path)


def test_cifar10_file_is_not_read_as_cifar100(tmp_path: Path) -> None:
    path = tmp_path / "train.bin"
    path.write_bytes(b"".join(record(b"\x01", img) for img in hwc_images(2, seed=0)))  # 6146 bytes
    with pytest.raises(UserError, match="not a whole number of cifar100 records"):
        read_cifar_records(path, fmt=CIFAR100)


def test_missing_files_are_listed(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(UserError, match=r"files missing in .*cifar-10-batches-bin: data_batch_5.bin, test_batch.bin"):
        load_data("cifar10", root=tmp_path)
    with pytest.raises(UserError, match="cifar100 files missing.*cifar-100-binary.tar.gz"):
        load_data("cifar100", root=tmp_path)


def test_python_version_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(UserError, match="not read, because it is made of pickles"):
        load_data("cifar10", root=tmp_path)
