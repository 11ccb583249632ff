"""Weights on disk without pickle: safetensors, or torch files read with ``weights_only``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from autoprune.errors import UserError
from autoprune.store.files import replace_durably, set_file_mode


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file written by :func:`save_weights`, tied keys restored (sharing one tensor)."""
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        tied = json.loads((handle.metadata() or {}).get(TIED_KEY, "{}"))
    for key, source in tied.items():
        state[key] = state[source]
    return state


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling arbitrary objects.

    A torch file holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped, and a
    ``module.`` prefix left by DataParallel is removed.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"checkpoint {path!r} does not exist.")
    if file.suffix == ".safetensors":
        try:
            return load_weights(file)
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"checkpoint {path!r} is not a readable safetensors file ({exc}).") from None
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled objects; any failure means bad input
        raise UserError(
            f"checkpoint {path!r} could not be read as a weights-only torch file ({type(exc).__name__}); "
            "save it with torch.save(model.state_dict(), path) or as .safetensors."
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path!r} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


#: safetensors metadata key naming the tensors stored once for several keys (tied weights)
TIED_KEY = "autoprune_tied"


def save_weights(state: dict[str, torch.Tensor], path: Path, *, metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` as safetensors atomically and durably (temp file in the same folder,
    fsync, rename, fsync of the folder): the run journals a trial only after its weights
    are saved, and a journaled trial must never point at weights a power cut took away.

    A tensor shared by several keys (a language model's embedding tied to its output
    layer) is stored once, under its first key; :func:`load_weights` gives it back under
    every key. safetensors refuses shared tensors, and duplicates would double the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first_key: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key, value in state.items():
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if identity in first_key and value.numel() > 0:
            tied[key] = first_key[identity]
            continue
        first_key[identity] = key
        tensors[key] = value.detach().contiguous().cpu()
    if tied:
        metadata = {**(metadata or {}), TIED_KEY: json.dumps(tied)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        set_file_mode(tmp)  # mkstemp makes 0600; a run shared by a team is read by others
        replace_durably(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
