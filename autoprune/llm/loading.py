"""Load a local Hugging Face causal language model (``--model hf:PATH``) and its tokenizer.

``PATH`` is a model directory (``config.json``, weights, tokenizer files, as written by
``save_pretrained``) or a single ``.gguf`` file. Nothing is ever downloaded: a hub name
that is not a local path is refused, every ``from_pretrained`` call passes
``local_files_only=True``, and ``HF_HUB_OFFLINE`` is set before transformers is first
imported. ``trust_remote_code`` is never turned on, so only the families transformers
itself implements (and autoprune can prune) are accepted.

A ``.gguf`` file is dequantised to float32 once and kept as an ordinary safetensors model
directory under autoprune's cache folder, keyed by the file's content hash, so later runs
(and every Ray worker) load it as fast as any model directory.

:class:`LMSpec` is what a run records (``to_dict``) to load the same model again in
another process; :meth:`LMSpec.check_unchanged` tells a resumed run whether the files
still hold the same weights.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.torchvision_compat import make_torchvision_importable

logger = logging.getLogger(__name__)

#: the prefix of a ``--model`` value naming a local Hugging Face model
PREFIX = "hf:"

#: ``model_type`` values autoprune loads (and the structure code knows how to prune)
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral", "gpt2")

#: how a missing optional dependency is named to the user
INSTALL_HINT = "pip install 'autoprune[llm]'"

#: files of a model directory that decide what it computes (hashed into its fingerprint)
_CONTENT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".tiktoken")

#: marker written last into a dequantised gguf cache directory; its absence means unfinished
_GGUF_MARKER = "autoprune-gguf.json"

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hf_model(value: str) -> bool:
    """Whether a ``--model`` value names a Hugging Face model (``hf:PATH``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class LMSpec:
    """Where a language model comes from: enough to load it again in another process.

    ``path`` is absolute; ``kind`` is ``"dir"`` or ``"gguf"``; ``fingerprint`` is a hash of
    the files' content (for a directory: every top-level file that defines the model)."""

    path: str
    kind: str
    model_type: str
    fingerprint: str

    def __post_init__(self) -> None:
        if self.kind not in ("dir", "gguf"):
            raise ValueError(f"kind must be 'dir' or 'gguf', got {self.kind!r}")

    @property
    def source(self) -> str:
        """The ``--model`` value that names this model."""
        return f"{PREFIX}{self.path}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LMSpec":
        return cls(**{k: str(data[k]) for k in ("path", "kind", "model_type", "fingerprint")})

    def load(self) -> "LoadedLM":
        """The model (float32, eval mode) and its tokenizer, from the gguf cache when it has them."""
        if self.kind == "dir":
            model, tokenizer = _load_dir(Path(self.path), what=self.source)
            return LoadedLM(model=model, tokenizer=tokenizer, spec=self, model_dir=Path(self.path))
        folder = gguf_cache_folder(Path(self.path), self.fingerprint)
        if not (folder / _GGUF_MARKER).is_file():
            _dequantise(Path(self.path), folder)
        model, tokenizer = _load_dir(folder, what=self.source)
        return LoadedLM(model=model, tokenizer=tokenizer, spec=self, model_dir=folder)

    def check_unchanged(self) -> None:
        """Raise :class:`UserError` when the files at ``path`` no longer hold this model."""
        current = resolve_lm(self.source)
        if current.fingerprint != self.fingerprint:
            raise UserError(f"the model at {self.path} changed since this run started (fingerprint "
                            f"{current.fingerprint}, was {self.fingerprint}); restore it or start a new run.")


@dataclass
class LoadedLM:
    """A loaded causal LM: the model, its tokenizer, where it came from and its context length."""

    model: nn.Module
    tokenizer: Any
    spec: LMSpec
    #: the directory it was read from (for a gguf file: the dequantised cache directory)
    model_dir: Path

    @property
    def max_context(self) -> int | None:
        return max_context(self.model.config)


def max_context(config: Any) -> int | None:
    """The longest sequence (in tokens) the model's position encoding allows, or None if unbounded."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_lm(source: str) -> LoadedLM:
    """Resolve ``hf:PATH`` (see :func:`resolve_lm`) and load it."""
    return resolve_lm(source).load()


def resolve_lm(source: str) -> LMSpec:
    """Check that ``hf:PATH`` names a loadable local model and describe it, without loading weights."""
    if not is_hf_model(source):
        raise UserError(f"--model {source!r} is not a Hugging Face model; write it as hf:PATH.")
    raw = source[len(PREFIX):]
    if not raw:
        raise UserError("--model hf: needs a path after 'hf:', e.g. hf:./my-model or hf:model.gguf.")
    path = Path(raw).expanduser()
    if not path.exists():
        if _HUB_NAME.match(raw) and not raw.startswith((".", "~")):
            raise UserError(f"--model {source} is not a local path and looks like a Hugging Face hub name; autoprune "
                            "never downloads (no network): download it elsewhere and pass hf:DIRECTORY.")
        raise UserError(f"--model {source}: {path} does not exist.")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"--model {source} is a file but not a .gguf file; pass a .gguf file or a Hugging Face "
                            "model directory (with config.json).")
        require_llm_extra(gguf=True)
        model_type = _gguf_model_type(path, source)
        return LMSpec(path=str(path), kind="gguf", model_type=model_type, fingerprint=_hash_files([path]))
    require_llm_extra()
    model_type = _dir_model_type(path, source)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _CONTENT_SUFFIXES)
    return LMSpec(path=str(path), kind="dir", model_type=model_type, fingerprint=_hash_files(files, root=path))


def require_llm_extra(*, gguf: bool = False) -> None:
    """Raise :class:`UserError` naming the install command when the ``llm`` extra is missing."""
    needed = ("transformers", "gguf", "accelerate") if gguf else ("transformers",)
    _offline()
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        what = "a .gguf model" if gguf else "a Hugging Face model"
        raise UserError(f"loading {what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                        f"not installed; run {INSTALL_HINT}.")


def gguf_cache_folder(file: Path, fingerprint: str) -> Path:
    """Where the float32 safetensors copy of a gguf file is kept (content-addressed)."""
    from autoprune.tasks import cache_dir  # tasks imports much of autoprune; only this function is needed

    stem = re.sub(r"[^\w.-]", "_", file.stem)[:80]
    return cache_dir() / "gguf" / f"{stem}-{fingerprint}"


def _offline() -> None:
    """Switch the Hugging Face hub client offline before transformers is first imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def transformers_module() -> Any:
    """transformers, imported with the hub switched offline first (nothing may reach the network),
    and its per-file progress bars off (autoprune logs what it loads; the bars would break
    the one-line errors and the search's own progress). transformers imports torchvision
    when it is installed, so a CUDA torchvision wheel beside CPU torch is made importable
    first (:mod:`autoprune.torchvision_compat`)."""
    _offline()
    make_torchvision_importable()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return transformers


def _dir_model_type(path: Path, source: str) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"--model {source} is not a Hugging Face model directory: it has no config.json "
                        "(save one with model.save_pretrained(DIR)).")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--model {source}: config.json is not readable JSON ({exc}).") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    _check_model_type(model_type, source)
    return str(model_type)


def _check_model_type(model_type: Any, source: str) -> None:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"--model {source} is a {model_type!r} model; autoprune supports the model types "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)}.")


def _gguf_model_type(path: Path, source: str) -> str:
    """The architecture a gguf file declares, read from its metadata without its tensors."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as exc:  # a damaged or foreign file fails in many ways inside the reader
        raise UserError(f"--model {source} is not a readable gguf file ({type(exc).__name__}: {exc}).") from None
    _check_model_type(architecture, source)
    return architecture


def _hash_files(files: list[Path], *, root: Path | None = None) -> str:
    """sha256 (16 hex digits) over the names and bytes of ``files``."""
    digest = hashlib.sha256()
    for file in files:
        name = str(file.relative_to(root)) if root is not None else ""
        digest.update(f"{name}:{file.stat().st_size};".encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _load_dir(path: Path, *, what: str) -> tuple[nn.Module, Any]:
    """Model (float32, sdpa attention, eval mode) and tokenizer of a local model directory."""
    transformers = transformers_module()
    options = dict(local_files_only=True, trust_remote_code=False)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                                  attn_implementation="sdpa", **options)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a bad directory
        raise UserError(f"--model {what} could not be loaded as a Hugging Face causal LM "
                        f"({type(exc).__name__}: {_first_line(exc)}).") from None
    _check_model_type(model.config.model_type, what)
    try:
        tokenizer = _tokenizer_class(path, transformers).from_pretrained(str(path), **options)
    except Exception as exc:
        raise UserError(f"--model {what} has no usable tokenizer ({type(exc).__name__}: {_first_line(exc)}); "
                        "save one next to the model with tokenizer.save_pretrained(DIR).") from None
    if len(tokenizer) < 2:  # transformers builds an empty tokenizer for a directory without tokenizer files
        raise UserError(f"--model {what} has no usable tokenizer (its vocabulary is empty); save one next to the "
                        "model with tokenizer.save_pretrained(DIR).")
    return model.eval(), tokenizer


def _tokenizer_class(path: Path, transformers: Any) -> Any:
    """The class that reads the directory's tokenizer exactly as saved.

    A directory whose ``tokenizer_config.json`` names the generic backend (what
    ``save_pretrained`` writes for a plain ``tokenizer.json``) is read with that class:
    ``AutoTokenizer`` would pick the model type's own class instead, which rebuilds the
    tokenizer from a vocabulary and merges it may not have. Otherwise ``AutoTokenizer``."""
    try:
        named = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        named = None
    generic = {"TokenizersBackend", "PreTrainedTokenizerFast"}
    if named in generic and (path / "tokenizer.json").is_file() and hasattr(transformers, named):
        return getattr(transformers, named)
    return transformers.AutoTokenizer


def _dequantise(file: Path, folder: Path) -> None:
    """Read ``file`` with transformers' gguf support (float32) and save it as a model directory at ``folder``.

    Written into a temporary sibling and renamed, so an interrupted run leaves no
    half-written directory that a later run would trust."""
    transformers = transformers_module()
    size_mb = file.stat().st_size / 1e6
    logger.info("dequantising %s (%.0f MB) to float32 once; it is cached in %s", file.name, size_mb, folder)
    started = time.perf_counter()
    options = dict(gguf_file=str(file), local_files_only=True, trust_remote_code=False)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(file.parent), dtype=torch.float32, **options)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(file.parent), **options)
    except Exception as exc:  # the gguf reader and converters fail in many ways on a bad file
        raise UserError(f"--model hf:{file} is a gguf file that does not load "
                        f"({type(exc).__name__}: {_first_line(exc)}).") from None
    logger.info("dequantised %s in %.1f s; writing the safetensors copy", file.name, time.perf_counter() - started)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are float32 already; only the marker that refuses saving remains
        quantizer.remove_quantization_config(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": str(file), "size": file.stat().st_size, "seconds": round(time.perf_counter() - started, 1)}
        (tmp / _GGUF_MARKER).write_text(json.dumps(marker, indent=1))
        if folder.exists():  # another process finished first; its copy is the same
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%s ready in %s (%.1f s in all)", file.name, folder, time.perf_counter() - started)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
