"""The settings of a search, shared by the CLI flags, ``--config FILE`` and the Python API.

One dataclass, so every entry point validates alike and ``run.json`` records the whole
configuration in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import UserError

EXECUTORS = ("local", "ray")
#: which parameters retraining updates: all, or (PERP, Zimmer et al. 2023) only the
#: normalisation weights and biases of a language model
TRAIN_PARAMS = ("all", "norms-and-biases")


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search run (``run_dir`` and ``resume`` excluded)."""

    data: str = "digits"
    model: str | None = None
    data_root: str | None = None
    image_size: int | None = None
    checkpoint: str | None = None
    space_file: str | None = None
    budget: tuple[str, ...] = ("flops=0.4",)
    searcher: str = "random"
    searcher_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 40
    time_limit: float | None = None
    fidelity: int = 100
    bn_batches: int = 8
    #: retraining settings; None takes the model kind's default (:meth:`retraining`)
    lr: float | None = None
    batch_size: int | None = None
    distill_weight: float | None = None
    train_params: str = "all"
    #: tokens per sequence of a language model's text (None: 256); images have their own shape
    seq_len: int | None = None
    latency_batch_size: int = 1
    #: timed repeats of each trial's latency (0: latency not measured); None: the model kind's default
    latency_repeats: int | None = None
    device: str = "auto"
    executor: str = "local"
    workers: int | None = None
    address: str | None = None
    gpus_per_worker: float | None = None
    #: torch threads of each evaluation: in this process (local), or per Ray worker, which
    #: reserves as many CPUs; None: torch's default (every core) locally, one per Ray worker
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_names(self)
        object.__setattr__(self, "budget", _budget_texts(self.budget))
        if not self.budget:
            raise UserError("give at least one budget, e.g. --budget flops=0.4.")
        _positive_int("trials", self.trials)
        _positive_int("latency_batch_size", self.latency_batch_size)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.seq_len is not None:
            _positive_int("seq_len", self.seq_len)
        if self.latency_repeats is not None and (not isinstance(self.latency_repeats, int)
                                                 or isinstance(self.latency_repeats, bool) or self.latency_repeats < 0):
            raise UserError(f"latency_repeats must be a whole number >= 0, got {self.latency_repeats!r}.")
        for name in ("fidelity", "bn_batches", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"{name} must be a whole number >= 0, got {value!r}.")
        for name in _FLOAT_OPTIONS:  # nan and inf compare false with everything: refused before any range check
            value = getattr(self, name)
            if value is not None and not _finite(value):
                raise UserError(f"{name} must be a finite number, got {value!r}.")
        if self.time_limit is not None and not self.time_limit > 0:
            raise UserError(f"time_limit must be a positive number of seconds, got {self.time_limit!r}.")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"lr must be a positive number, got {self.lr!r}.")
        if self.distill_weight is not None and not 0 <= self.distill_weight <= 1:
            raise UserError(f"distill_weight must lie in [0, 1], got {self.distill_weight!r}.")
        if self.train_params not in TRAIN_PARAMS:
            raise UserError(f"train_params must be one of {', '.join(TRAIN_PARAMS)}, got {self.train_params!r}.")
        if self.image_size is not None:
            _positive_int("image_size", self.image_size)
        if self.executor not in EXECUTORS:
            raise UserError(f"unknown executor {self.executor!r}; known executors: {', '.join(EXECUTORS)}.")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise UserError(f"device must be auto, cpu or cuda[:N], got {self.device!r}.")
        if self.workers is not None:
            _positive_int("workers", self.workers)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if self.gpus_per_worker is not None and not 0 < self.gpus_per_worker <= 8:
            raise UserError(f"gpus_per_worker must be a number in (0, 8], e.g. 0.5 or 1, got {self.gpus_per_worker!r}.")
        if self.executor == "local" and (self.workers not in (None, 1) or self.address or self.gpus_per_worker):
            raise UserError("--workers, --address and --gpus-per-worker need --executor ray.")
        if not isinstance(self.searcher_options, dict):
            raise UserError(f"searcher_options must be a mapping, got {self.searcher_options!r}.")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["budget"] = list(self.budget)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "configuration") -> "SearchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
            hints = [f"{name!r} (did you mean {match[0]!r}?)" if match else repr(name) for name, match in close.items()]
            raise UserError(f"{source} has unknown options {', '.join(hints)}; known options: {sorted(known)}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UserError(f"{source} has a value of the wrong type ({exc}).") from None


#: options that are real numbers (int accepted); each must be finite
_FLOAT_OPTIONS = ("time_limit", "lr", "distill_weight", "gpus_per_worker")


def _finite(value: Any) -> bool:
    """A real number (not a bool) that is neither nan nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: options that name things, and so must be text
_TEXT_OPTIONS = ("data", "model", "data_root", "checkpoint", "space_file", "searcher", "executor", "device", "address",
                 "train_params")


def _check_names(config: SearchConfig) -> None:
    """A Python caller may pass objects where names are expected: say what is wanted."""
    for name in _TEXT_OPTIONS:
        value = getattr(config, name)
        if value is None or isinstance(value, str):
            continue
        if name in ("model", "data"):
            raise UserError(
                f"{name} must be a built-in name or 'package.module:factory' naming a function that builds it, "
                f"got a {type(value).__name__} object; autoprune rebuilds the {name} from that name on its workers "
                "and when loading an export, so put its construction in a function of an importable module.")
        if isinstance(value, Path) and name in ("data_root", "checkpoint", "space_file"):
            object.__setattr__(config, name, str(value))
            continue
        raise UserError(f"{name} must be text, got {value!r}.")


def _budget_texts(budget: Any) -> tuple[str, ...]:
    """Budgets as ``key=value`` texts, from one text, a list of them, or a mapping such as
    ``{"flops": 0.4}`` (the natural spelling in Python)."""
    if isinstance(budget, str):
        return (budget,)
    if isinstance(budget, dict):
        return tuple(f"{key}={value}" for key, value in budget.items())
    if isinstance(budget, (list, tuple)) and all(isinstance(item, str) for item in budget):
        return tuple(budget)
    raise UserError(f"budget must be text such as 'flops=0.4', a list of them, or a mapping such as "
                    f"{{'flops': 0.4}}, got {budget!r}.")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{name} must be a whole number >= 1, got {value!r}.")


#: config-file keys spelled as the flags are, for the fields they set
_FLAG_KEYS = {"space": "space_file", "searcher_option": "searcher_options"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"key {repeated[0]!r} is given twice",
                                                    node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a YAML (or JSON) file: keys named like the CLI flags, with underscores or
    dashes (``space`` and ``searcher_option`` as well as ``space_file``, ``searcher_options``),
    and ``run_dir``."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path!r} does not exist.")
    try:
        data = yaml.load(file.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"config file {path!r} is not valid YAML ({problem}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path!r} must hold a mapping of option: value.")
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = _FLAG_KEYS.get(name, name)
        if name in options:
            raise UserError(f"config file {path!r} gives {name} twice (as {key!r} and another spelling); keep one.")
        options[name] = value
    return options
