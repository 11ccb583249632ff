"""Text data for language models (``--data text:PATH``): token sequences in three splits.

``PATH`` is a text file or a folder of text files (``.txt``, ``.md``, ``.rst``, searched
recursively, read as UTF-8). The text is tokenised with the model's own tokenizer and cut
into non-overlapping sequences of ``seq_len`` tokens, in three splits with the same jobs as
the image splits (:mod:`autoprune.data.base`):

- ``train``: calibration and the short distillation retraining;
- ``val``: held-out text on which candidates are ranked during search;
- ``test``: touched only when a model is reported or exported.

How the text is split, in order of preference:

1. a folder holding ``train/``, ``val/`` and ``test/`` sub-folders is split as given;
2. a folder of enough files is split by file: files are taken in a fixed pseudo-random
   order (by a hash of their path) into test, then val, until each holds its fraction of
   the tokens, the rest is train; no file is shared, so held-out text is never trained on;
3. otherwise (one file, or too few files to split) by position: the text in path order,
   the first part train, then val, then test, each contiguous.

Files are joined with the tokenizer's end-of-sequence token (when it has one), so a
sequence that spans two files sees where one ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune.errors import UserError

logger = logging.getLogger(__name__)

#: the prefix of a ``--data`` value naming text
PREFIX = "text:"

#: tokens per sequence unless ``--seq-len`` says otherwise
DEFAULT_SEQ_LEN = 256

#: file endings read from a folder (``.rst.txt`` ends in ``.txt``)
TEXT_SUFFIXES = (".txt", ".md", ".rst")

#: the three sub-folders of an explicitly split folder
SPLIT_FOLDERS = ("train", "val", "test")

#: a folder needs at least this many files to be split by file
MIN_FILES_TO_SPLIT_BY_FILE = 3

#: hex digits of a fingerprint, as for image data
FINGERPRINT_LENGTH = 16


def is_text_data(value: str) -> bool:
    """Whether a ``--data`` value names text (``text:PATH``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class TokenData:
    """Token sequences of three splits, each a LongTensor of shape ``(n, seq_len)``.

    ``split_by`` is ``"folders"``, ``"files"`` or ``"position"``; ``files`` names the files
    (relative to the source) of each split, empty lists when split by position."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    seq_len: int
    vocab_size: int
    tokenizer_id: str
    split_by: str
    files: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in SPLIT_FOLDERS:
            tokens = getattr(self, split)
            if tokens.dtype != torch.long or tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
                raise ValueError(f"{split} must be a LongTensor (n, {self.seq_len}), got {tokens.dtype} "
                                 f"{tuple(tokens.shape)}")
            if len(tokens) == 0:
                raise ValueError(f"{split} holds no sequence")
        if self.split_by not in ("folders", "files", "position"):
            raise ValueError(f"split_by must be folders, files or position, got {self.split_by!r}")

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """The first ``batch_size`` training sequences, for tracing and FLOP counting."""
        return self.train[:batch_size]

    @property
    def fingerprint(self) -> str:
        return text_data_fingerprint(self)

    def describe(self) -> dict[str, Any]:
        """What a run records about its data (JSON-ready)."""
        return {
            "name": self.name, "seq_len": self.seq_len, "split_by": self.split_by,
            "sequences": {s: len(getattr(self, s)) for s in SPLIT_FOLDERS},
            "files": {s: len(self.files.get(s, [])) for s in SPLIT_FOLDERS},
            "tokenizer": self.tokenizer_id, "fingerprint": self.fingerprint,
        }


def load_text_data(
    source: str,
    tokenizer: Any,
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_context: int | None = None,
) -> TokenData:
    """Tokenise ``text:PATH`` with ``tokenizer`` into sequences of ``seq_len`` tokens, split three ways.

    ``val_fraction`` and ``test_fraction`` are shares of the tokens (for a folder split by
    file, reached file by file); ``max_context`` is the model's longest sequence, beyond
    which ``seq_len`` is refused."""
    if not is_text_data(source):
        raise UserError(f"--data {source!r} is not text; write it as text:PATH.")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise UserError(f"--seq-len must be a whole number of at least 2 tokens, got {seq_len!r}.")
    if max_context is not None and seq_len > max_context:
        raise UserError(f"--seq-len {seq_len} is beyond the model's context of {max_context} tokens; "
                        f"pass --seq-len {max_context} or less.")
    for name, value in (("val", val_fraction), ("test", test_fraction)):
        if not 0.0 < value < 1.0:
            raise UserError(f"the {name} fraction must be between 0 and 1, got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(f"the val and test fractions ({val_fraction} + {test_fraction}) leave no text for training; "
                        "make their sum less than 1.")
    path = Path(source[len(PREFIX):]).expanduser()
    if not path.exists():
        raise UserError(f"--data {source}: {path} does not exist.")
    identity = tokenizer_fingerprint(tokenizer)
    common = dict(name=source, seq_len=seq_len, vocab_size=len(tokenizer), tokenizer_id=identity)
    if path.is_dir() and all((path / s).is_dir() for s in SPLIT_FOLDERS):
        parts = {s: _files(path / s, source) for s in SPLIT_FOLDERS}
        streams = {s: _stream(_tokenise(files, path / s, tokenizer), tokenizer) for s, files in parts.items()}
        _check_long_enough(streams, seq_len, source, by="folder")
        return TokenData(**common, **{s: _chunk(streams[s], seq_len) for s in SPLIT_FOLDERS}, split_by="folders",
                         files={s: [str(f.relative_to(path)) for f in parts[s]] for s in SPLIT_FOLDERS})
    files = [path] if path.is_file() else _files(path, source)
    root = path.parent if path.is_file() else path
    tokens = _tokenise(files, root, tokenizer)
    if len(files) >= MIN_FILES_TO_SPLIT_BY_FILE:
        by_file = _split_by_file(files, tokens, root, tokenizer, seq_len=seq_len, val_fraction=val_fraction,
                                 test_fraction=test_fraction)
        if by_file is not None:
            streams, names = by_file
            return TokenData(**common, **{s: _chunk(streams[s], seq_len) for s in SPLIT_FOLDERS},
                             split_by="files", files=names)
        logger.info("%s: its files cannot be split whole into train, val and test; splitting by position", source)
    stream = _stream(tokens, tokenizer)
    bounds = _position_bounds(len(stream), val_fraction, test_fraction)
    streams = {s: stream[a:b] for s, (a, b) in zip(SPLIT_FOLDERS, bounds)}
    if any(len(part) < seq_len for part in streams.values()):
        needed = _tokens_needed(seq_len, val_fraction, test_fraction)
        raise UserError(f"--data {source} has {len(stream)} tokens with this tokenizer, but splitting it into train, "
                        f"val and test sequences of {seq_len} tokens needs at least {needed}; give more text or a "
                        "smaller --seq-len.")
    return TokenData(**common, **{s: _chunk(streams[s], seq_len) for s in SPLIT_FOLDERS}, split_by="position",
                     files={s: [] for s in SPLIT_FOLDERS})


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what the tokenizer does: its full serialisation when it has one, else its vocabulary."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(f";eos={tokenizer.eos_token_id}".encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def text_data_fingerprint(data: TokenData) -> str:
    """A 16-hex-digit hash that changes when the tokens, the split or the tokenizer do (not the name)."""
    digest = hashlib.sha256(f"seq_len={data.seq_len};split={data.split_by};tokenizer={data.tokenizer_id}".encode())
    for split in SPLIT_FOLDERS:
        tokens = getattr(data, split).contiguous()
        digest.update(f";{split}:{tuple(tokens.shape)};".encode())
        digest.update(tokens.numpy().tobytes())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def _files(folder: Path, source: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(TEXT_SUFFIXES))
    if not files:
        raise UserError(f"--data {source}: {folder} holds no text files (ending in {', '.join(TEXT_SUFFIXES)}).")
    return files


def _tokenise(files: list[Path], root: Path, tokenizer: Any) -> list[list[int]]:
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"--data: {file.relative_to(root)} in {root} is not UTF-8 text; convert it or "
                            "remove it from the folder.") from None
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [list(ids) for ids in encoded]


def _stream(pieces: list[list[int]], tokenizer: Any) -> np.ndarray:
    """The pieces' tokens end to end, separated by the end-of-sequence token when there is one."""
    eos = tokenizer.eos_token_id
    joined: list[int] = []
    for i, ids in enumerate(pieces):
        if i and eos is not None:
            joined.append(int(eos))
        joined.extend(ids)
    return np.asarray(joined, dtype=np.int64)


def _chunk(stream: np.ndarray, seq_len: int) -> torch.Tensor:
    n = len(stream) // seq_len
    return torch.from_numpy(stream[: n * seq_len].reshape(n, seq_len).copy())


def _split_by_file(files: list[Path], tokens: list[list[int]], root: Path, tokenizer: Any, *, seq_len: int,
                   val_fraction: float, test_fraction: float) -> tuple[dict[str, np.ndarray], dict[str, list[str]]] | None:
    """Whole files into test, val and train by a fixed order; None when a split would hold no sequence."""
    names = [str(f.relative_to(root)) for f in files]
    order = sorted(range(len(files)), key=lambda i: hashlib.sha256(names[i].encode()).hexdigest())
    total = sum(len(t) for t in tokens)
    goals = {"test": test_fraction * total, "val": val_fraction * total}
    chosen: dict[str, list[int]] = {s: [] for s in SPLIT_FOLDERS}
    cursor = 0
    for split in ("test", "val"):
        taken = 0
        while cursor < len(order) and taken < goals[split]:
            chosen[split].append(order[cursor])
            taken += len(tokens[order[cursor]])
            cursor += 1
    chosen["train"] = order[cursor:]
    streams = {}
    for split, picked in chosen.items():
        picked.sort()  # path order inside a split
        streams[split] = _stream([tokens[i] for i in picked], tokenizer)
    if any(len(s) < seq_len for s in streams.values()):
        return None
    return streams, {s: [names[i] for i in chosen[s]] for s in SPLIT_FOLDERS}


def _position_bounds(total: int, val_fraction: float, test_fraction: float) -> list[tuple[int, int]]:
    n_test = int(test_fraction * total)
    n_val = int(val_fraction * total)
    n_train = total - n_val - n_test
    return [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, total)]


def _tokens_needed(seq_len: int, val_fraction: float, test_fraction: float) -> int:
    """The fewest tokens whose split by position gives every part one whole sequence."""
    smallest = min(val_fraction, test_fraction, 1.0 - val_fraction - test_fraction)
    total = max(3 * seq_len, math.floor(seq_len / smallest))
    while any(b - a < seq_len for a, b in _position_bounds(total, val_fraction, test_fraction)):
        total += 1
    return total


def _check_long_enough(streams: dict[str, np.ndarray], seq_len: int, source: str, *, by: str) -> None:
    for split, stream in streams.items():
        if len(stream) < seq_len:
            raise UserError(f"--data {source}: the {split} {by} has {len(stream)} tokens with this tokenizer, but "
                            f"needs at least {seq_len} for one sequence; give it more text or a smaller --seq-len.")
