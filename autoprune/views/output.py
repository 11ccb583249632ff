"""Writing the file a user named (a plot, a report): checked first, then written whole."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from autoprune.errors import UserError
from autoprune.store.files import check_writable_folder, write_bytes_atomic

logger = logging.getLogger(__name__)


def check_output(path: str | Path, flag: str, suffix: str) -> Path:
    """``path`` as a Path, refused in one sentence when it cannot become the file ``flag`` names:
    a folder, a wrong suffix, or a place that cannot be written."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise UserError(f"{flag} needs a file name such as 'out{suffix}', got {path!r}.")
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise UserError(f"{flag} {str(path)!r} must end in {suffix}; name a {suffix} file.")
    if path.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a folder; name a {suffix} file in it.")
    check_writable_folder(path.parent, flag)
    return path


def write_output(path: Path, data: bytes, flag: str) -> None:
    """Write ``data`` to ``path`` whole; a write error (a full disk, a read-only mount) is one sentence."""
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise UserError(f"{flag} {str(path)!r} could not be written ({exc.strerror}); "
                        f"{'free some space' if full else 'choose another place'}.") from None
