"""Per-family search-space defaults, read from ``search_spaces/<family>.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import UserError
from autoprune.space.levels import LevelGrid

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
KEYS = {"level_step", "min_keep_ratio", "min_channels", "round_to", "never_prune"}
#: keys only a language model's space has (``search_spaces/llm.yaml``), with their checks
LANGUAGE_KEYS: dict[str, tuple[str, ...] | type] = {
    "attention_mode": ("kv_groups", "heads"),
    "remove_blocks": bool,
    "params_with_embeddings": bool,
    "importance": ("magnitude", "activation"),
    "calibration_samples": int,
}
#: the family of every Hugging Face language model
LANGUAGE_FAMILY = "llm"


@dataclass(frozen=True)
class SpaceConfig:
    """The level grid and the layers kept whole, for one model family."""

    grid: LevelGrid
    never_prune: tuple[str, ...]
    #: the language-model keys (:data:`LANGUAGE_KEYS`); empty for other families
    language: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"grid": self.grid.to_dict(), "never_prune": list(self.never_prune)}
        if self.language:
            data["language"] = dict(self.language)
        return data


def load_space_config(family: str, path: str | Path | None = None) -> SpaceConfig:
    """The YAML defaults of ``family``, overridden key by key by the file at ``path`` when
    given (a file that sets only ``never_prune`` keeps the family's grid and rounding)."""
    family_file = SPACES_DIR / f"{family}.yaml"
    language = family == LANGUAGE_FAMILY
    data = _read(family_file if family_file.is_file() else SPACES_DIR / "default.yaml", language=language)
    file = family_file
    if path:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"search-space file {str(file)!r} does not exist.")
        data = {**data, **_read(file, language=language)}
    try:
        grid = LevelGrid.from_step(
            step=_number(data, "level_step", 0.0625, file), min_ratio=_number(data, "min_keep_ratio", 0.0625, file),
            min_channels=_whole(data, "min_channels", 1, file), round_to=_whole(data, "round_to", 1, file),
        )
    except UserError as exc:
        raise UserError(f"search-space file {str(file)!r}: {exc}") from None
    never = data.get("never_prune") or []
    if not isinstance(never, list) or not all(isinstance(p, str) for p in never):
        raise UserError(f"search-space file {str(file)!r}: never_prune must be a list of layer-name patterns.")
    options = {key: data[key] for key in LANGUAGE_KEYS if key in data} if language else {}
    return SpaceConfig(grid=grid, never_prune=tuple(never), language=options)


def _read(file: Path, *, language: bool = False) -> dict[str, Any]:
    """The settings of one search-space file, keys checked (language-model keys only for
    language models, where their values are checked too)."""
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"search-space file {str(file)!r} is not valid YAML ({exc.__class__.__name__}).") from None
    known = KEYS | set(LANGUAGE_KEYS) if language else KEYS
    if not isinstance(data, dict) or set(data) - known:
        extra = sorted(set(data) - known) if isinstance(data, dict) else data
        only_language = isinstance(data, dict) and not language and set(extra) <= set(LANGUAGE_KEYS)
        if only_language:
            raise UserError(f"search-space file {str(file)!r} sets {extra}, which apply only to language models "
                            "(--model hf:PATH); leave them out.")
        raise UserError(f"search-space file {str(file)!r} has unknown keys {extra}; known: {sorted(known)}.")
    for key, allowed in LANGUAGE_KEYS.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(allowed, tuple):
            if value not in allowed:
                raise UserError(f"search-space file {str(file)!r}: {key} must be one of {list(allowed)}, "
                                f"got {value!r}.")
        elif allowed is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"search-space file {str(file)!r}: {key} must be a whole number >= 1, got {value!r}.")
        elif not isinstance(value, allowed):
            raise UserError(f"search-space file {str(file)!r}: {key} must be true or false, got {value!r}.")
    return data


def _number(data: dict[str, Any], key: str, default: float, file: Path) -> float:
    """``data[key]`` as a float: a number, or text that is one (PyYAML reads ``1e-1`` as
    text); a boolean, list or other text is refused."""
    value = data.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"search-space file {str(file)!r}: {key} must be a number, got {value!r}.")
    return float(value)


def _whole(data: dict[str, Any], key: str, default: int, file: Path) -> int:
    """``data[key]`` as an int; a whole YAML number only (1.5 is refused, not cut to 1)."""
    value = data.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"search-space file {str(file)!r}: {key} must be a whole number, got {value!r}.")
    return value
