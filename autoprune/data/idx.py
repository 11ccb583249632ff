"""Read the IDX array format of MNIST and Fashion-MNIST with numpy alone.

IDX is a four-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian ``uint32`` per dimension, then the values, big-endian and
row-major. Files are often distributed gzip-compressed; they are recognised by their
content (the gzip signature), not by their name, so a renamed file still reads.

Every way a file can be wrong (not IDX, cut short, trailing bytes, broken gzip) is
answered with a :class:`UserError` that names the file, because the usual cause is an
interrupted download or the wrong file in the folder.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from autoprune.errors import UserError

_GZIP_SIGNATURE = b"\x1f\x8b"

#: IDX type code -> big-endian numpy dtype of the stored values.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (plain or gzip-compressed), in native byte order."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise UserError(f"{path} is too short to be an IDX file ({len(raw)} bytes); download it again.")
    zero_a, zero_b, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero_a != 0 or zero_b != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise UserError(
            f"{path} is not an IDX file (magic number 0x{raw[:4].hex()}); "
            "check that the folder holds the original data files."
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise UserError(f"{path} is truncated inside its header; download it again.")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        problem = "is truncated" if found < expected else "has trailing bytes"
        raise UserError(
            f"{path} {problem}: its header announces shape {dims} ({expected} bytes of data) "
            f"but it holds {found}; download it again."
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return values.astype(dtype.newbyteorder("="), copy=True)


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"Cannot read {path} ({exc.strerror or exc}); check the path and its permissions.") from None
    if not raw.startswith(_GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path} is a damaged gzip file ({exc}); download it again.") from None
