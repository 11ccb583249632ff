"""IDX parsing against files written byte by byte here, and the Fashion-MNIST loader on tiny fakes."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.data import load_data
from autoprune.data.fashion_mnist import DEFAULT_ROOT
from autoprune.data.idx import read_idx
from autoprune.errors import UserError

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: two zero bytes, type code, ndim, big-endian dims, big-endian values."""
    header = bytes([0, 0, _TYPE_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["plain-idx3-ubyte", "packed-idx3-ubyte.gz"])
def test_uint8_round_trip(tmp_path: Path, name: str) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    back = read_idx(write_idx(tmp_path / name, array))
    assert back.dtype == np.uint8 and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_multibyte_values_are_big_endian(tmp_path: Path, dtype: type) -> None:
    array = np.array([[1, -2, 300], [10000, 5, -6]], dtype=dtype)
    back = read_idx(write_idx(tmp_path / "values.idx", array))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-magic-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x01\x02")
    with pytest.raises(UserError, match="bad-magic-idx1-ubyte is not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_data_names_the_file(tmp_path: Path, suffix: str) -> None:
    data = idx_bytes(np.zeros((4, 3, 3), dtype=np.uint8))[:-5]
    path = tmp_path / f"short{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(UserError, match=f"short{suffix} is truncated"):
        read_idx(path)


def test_truncated_header_trailing_bytes_and_damaged_gzip(tmp_path: Path) -> None:
    header_cut = tmp_path / "header"
    header_cut.write_bytes(idx_bytes(np.zeros((2, 2), dtype=np.uint8))[:6])
    with pytest.raises(UserError, match="header is truncated inside its header"):
        read_idx(header_cut)
    trailing = tmp_path / "trailing"
    trailing.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\x00")
    with pytest.raises(UserError, match="trailing has trailing bytes"):
        read_idx(trailing)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(np.zeros(100, dtype=np.uint8)))[:20])
    with pytest.raises(UserError, match="broken.gz is a damaged gzip file"):
        read_idx(broken)


def fake_fashion_mnist(folder: Path, *, n_train: int = 40, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The four files with tiny random content; the test images are gzipped, the training ones not."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte", train_x)
    write_idx(folder / "train-labels-idx1-ubyte", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(n_test) % 10).astype(np.uint8))
    return train_x, test_x


def test_fashion_mnist_from_a_folder(tmp_path: Path) -> None:
    _, test_x = fake_fashion_mnist(tmp_path)
    data = load_data("fashion-mnist", root=tmp_path)
    assert data.name == "fashion-mnist" and data.num_classes == 10
    assert data.input_shape == (1, 28, 28) and data.train.x.dtype == torch.uint8
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 10
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(test_x))
    assert data.test.y.tolist() == list(range(10))


def test_fashion_mnist_missing_files_are_listed(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"missing in .*: t10k-labels-idx1-ubyte\[\.gz\].*apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", root=tmp_path)
    with pytest.raises(UserError, match="does not exist.*--data-root"):
        load_data("fashion-mnist", root=tmp_path / "nowhere")


def test_fashion_mnist_count_mismatch_names_the_file(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(39, dtype=np.uint8))
    with pytest.raises(UserError, match="train-labels-idx1-ubyte has 39 labels but train-images-idx3-ubyte has 40"):
        load_data("fashion-mnist", root=tmp_path)


def test_fashion_mnist_swapped_files_are_refused(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(40, dtype=np.uint8))
    with pytest.raises(UserError, match="train-images-idx3-ubyte holds uint8 values of shape"):
        load_data("fashion-mnist", root=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    data = load_data("fashion-mnist")
    assert len(data.train) + len(data.val) == 60000 and len(data.test) == 10000
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert sorted(set(data.test.y.tolist())) == list(range(10))
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    pixels = torch.cat([data.train.x, data.val.x]).float() / 255
    assert float(pixels.mean()) == pytest.approx(data.mean[0], abs=1e-3)
    assert float(pixels.std()) == pytest.approx(data.std[0], abs=1e-3)
