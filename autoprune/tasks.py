"""A task: the data, the model architecture, and the trained dense weights.

Built-in zoo models without a checkpoint are trained on first use and cached (in
``$AUTOPRUNE_CACHE``, default ``~/.cache/autoprune``) keyed by architecture, data and
recipe, so the second run starts at once. A checkpoint is read without unpickling:
safetensors, or a torch file through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.data import load_data
from autoprune.data import data_fingerprint
from autoprune.data.base import TaskData
from autoprune.errors import UserError
from autoprune.evaluation.outputs import UnusableOutput, split_output
from autoprune.evaluation.training import TrainConfig, measure, train
from autoprune.factory import import_object, is_factory_spec
from autoprune.models import MODEL_NAMES, build_model, model_family
from autoprune.space.config import SpaceConfig, load_space_config
from autoprune.space.graph import tracing_mode
from autoprune.weights import load_state_dict_file, save_weights

logger = logging.getLogger(__name__)

DEFAULT_MODEL_FOR_DATA = {"digits": "digitnet"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the (untrained) architecture again in another process."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int

    def build(self) -> nn.Module:
        if is_factory_spec(self.name):
            return _build_from_factory(self)
        return build_model(self.name, in_channels=self.in_channels, image_size=self.image_size,
                           num_classes=self.num_classes)

    @property
    def family(self) -> str:
        return "default" if is_factory_spec(self.name) else model_family(self.name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        return cls(**{k: data[k] for k in ("name", "in_channels", "image_size", "num_classes")})


@dataclass
class Task:
    """Data plus a trained dense model, ready to be searched."""

    data: TaskData
    model_spec: ModelSpec
    dense: nn.Module
    space_config: SpaceConfig
    weights_source: str

    def example_input(self) -> torch.Tensor:
        return self.data.example_input(1)


def _build_from_factory(spec: ModelSpec) -> nn.Module:
    factory = import_object(spec.name, what="--model")
    offered = {"in_channels": spec.in_channels, "image_size": spec.image_size, "num_classes": spec.num_classes}
    try:
        accepted = inspect.signature(factory).parameters
        kwargs = {k: v for k, v in offered.items() if k in accepted}
        model = factory(**kwargs)
    except Exception as exc:
        raise UserError(f"--model {spec.name!r} failed when called ({type(exc).__name__}: {exc}).") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {spec.name!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def cache_dir() -> Path:
    """Where trained dense models are kept: ``$AUTOPRUNE_CACHE`` or ``~/.cache/autoprune``."""
    return Path(os.environ.get("AUTOPRUNE_CACHE") or Path.home() / ".cache" / "autoprune")


def dense_recipe(data_name: str) -> tuple[int, TrainConfig]:
    """(epochs, config) for training a zoo model from scratch on built-in data."""
    if data_name == "digits":
        return 20, TrainConfig(lr=0.05, batch_size=64)
    return 15, TrainConfig(lr=0.1, batch_size=128)


def prepare_task(
    *,
    model: str | None,
    data: str,
    data_root: str | None = None,
    image_size: int | None = None,
    checkpoint: str | None = None,
    space_file: str | None = None,
    before_weights: Callable[[Task], None] | None = None,
) -> Task:
    """Load data, build the model, and give it trained weights (checkpoint, cache, or training).

    ``before_weights`` is called with the task while its model is still untrained, for
    checks that need only the architecture (budgets within reach of the search space), so
    they fail before a first-use training that can take many minutes."""
    task_data = load_data(data, root=data_root, image_size=image_size)
    name = model or DEFAULT_MODEL_FOR_DATA.get(data)
    if name is None:
        raise UserError(f"--model is needed for data {data!r}; zoo models: {', '.join(MODEL_NAMES)}, "
                        "or package.module:factory.")
    if not is_factory_spec(name) and name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}, or package.module:factory.")
    c, h, w = task_data.input_shape
    spec = ModelSpec(name=name, in_channels=c, image_size=h, num_classes=task_data.num_classes)
    torch.manual_seed(0)
    dense = spec.build()
    _check_output_shape(dense, task_data, name)
    space_config = load_space_config(spec.family, space_file)
    if before_weights is not None:
        before_weights(Task(data=task_data, model_spec=spec, dense=dense, space_config=space_config,
                            weights_source="untrained"))
    if checkpoint:
        dense.load_state_dict(_checkpoint_state(checkpoint, dense, name))
        source = f"checkpoint:{checkpoint}"
    elif is_factory_spec(name):
        source = "factory"  # the factory's own weights, as returned
    else:
        source = _load_or_train(dense, spec, task_data)
    return Task(data=task_data, model_spec=spec, dense=dense.eval(), space_config=space_config, weights_source=source)


def _check_output_shape(model: nn.Module, data: TaskData, name: str) -> None:
    try:
        with torch.no_grad():
            out = model.eval()(data.example_input(2))
    except Exception as exc:
        raise UserError(
            f"model {name!r} fails on the data's input shape {data.input_shape} ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model {name!r} outputs {shape} for a batch of 2, but the data has "
                        f"{data.num_classes} classes; it must output (batch, {data.num_classes}).")
    try:  # retraining runs it in training mode, where some return auxiliary logits too (GoogLeNet)
        with torch.no_grad(), tracing_mode(model):
            split_output(model(data.example_input(2)))
    except UnusableOutput as exc:
        raise UserError(f"model {name!r} outputs {exc} in training mode; autoprune retrains on (batch, "
                        f"{data.num_classes}) logits, optionally followed by auxiliary logits of that shape.") from None
    except Exception as exc:  # noqa: BLE001  (searches without retraining still work; retraining will say)
        logger.warning("model %r fails in training mode (%s: %s); candidates cannot be retrained", name,
                       type(exc).__name__, exc)
    finally:
        model.eval()


def _checkpoint_state(path: str, model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, refused unless they match the model key for key and shape for shape.

    Only BatchNorm's ``num_batches_tracked`` counters may be missing: some exporters drop
    them, and they do not change what the model computes (torch fills them in itself)."""
    state = _with_batch_counters(load_state_dict_file(path), model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {_some(missing)}")
        if unexpected:
            details.append(f"unexpected {_some(unexpected)}")
        if wrong:
            k = wrong[0]
            details.append(f"shape of {k!r} is {tuple(state[k].shape)}, model has {tuple(expected[k].shape)}")
        raise UserError(f"checkpoint {path!r} does not match model {name!r}: {'; '.join(details)}.")
    return state


def _with_batch_counters(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with each BatchNorm's missing ``num_batches_tracked`` taken from ``model``."""
    filled = dict(state)
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.num_batches_tracked is None:
            continue
        key = f"{module_name}.num_batches_tracked" if module_name else "num_batches_tracked"
        filled.setdefault(key, module.num_batches_tracked.detach().clone())
    return filled


def _some(keys: list[str], shown: int = 3) -> str:
    """The first few keys and how many more, so a long list stays one readable sentence."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{keys[:shown]}{more}"


#: the dense model is flagged when its held-out accuracy closes at most this share of the
#: gap between chance and perfect (0.19 for 10 classes, 0.55 for two)
NEAR_CHANCE = 0.1


def warn_if_near_chance(accuracy: float, task: Task, *, as_given: float | None = None) -> bool:
    """Warn when the dense model is barely better than guessing, and say why it may be.

    Searching such a model wastes the whole run, and the usual causes are silent ones:
    untrained weights from a user factory, or inputs fed differently from how the
    checkpoint was trained. ``accuracy`` is measured after BatchNorm recalibration, as
    candidates are; ``as_given`` (when recalibrated) with the model's own statistics: near
    chance only as given, the statistics are stale, which the run's recalibration repairs,
    and the warning says so rather than blaming the inputs. Returns whether it warned."""
    chance = 1.0 / task.data.num_classes
    near = chance + NEAR_CHANCE * (1.0 - chance)
    if accuracy > near:
        if as_given is not None and as_given <= near:
            logger.warning("The dense model's held-out accuracy is %.4f with its own BatchNorm statistics but %.4f "
                           "after recalibrating them on training batches, as every candidate is: its running "
                           "statistics do not match its weights (trained briefly, or in another mode). The run "
                           "compares candidates with %.4f.", as_given, accuracy, accuracy)
            return True
        return False
    causes = []
    if task.weights_source == "factory":
        causes.append(f"--model {task.model_spec.name} without --checkpoint has the weights its factory built, "
                      "untrained unless it loads them")
    if task.weights_source == "factory" or task.weights_source.startswith("checkpoint:"):
        causes.append("the inputs differ from those the model was trained on (built-in data is normalised per "
                      "channel to mean 0 / std 1, factory data is used as given)")
    else:
        causes.append(f"the model autoprune trained ({task.weights_source}) did not learn the data; check its labels")
    logger.warning("The dense model's held-out accuracy is %.4f, near chance (%.4f for %d classes): %s.",
                   accuracy, chance, task.data.num_classes, "; or ".join(causes))
    return True


def _load_or_train(model: nn.Module, spec: ModelSpec, data: TaskData) -> str:
    epochs, config = dense_recipe(data.name)
    key_source = json.dumps({"model": spec.to_dict(), "data": data_fingerprint(data), "epochs": epochs,
                             "config": asdict(config), "version": 1}, sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    path = cache_dir() / f"dense-{spec.name}-{data.name}-{key}.safetensors"
    if path.is_file():
        try:
            model.load_state_dict(load_state_dict_file(str(path)))
            return f"cache:{path}"
        except (UserError, RuntimeError):
            logger.warning("cached dense weights %s are unreadable; training again", path)
    steps = epochs * max(1, len(data.train) // config.batch_size)
    logger.info("training the dense %s on %s for %d steps (first use; cached in %s)", spec.name, data.name, steps, path)
    outcome = train(model, data, steps=steps, config=config, seed=0, on_step=TrainingProgress(steps, spec.name))
    if outcome.diverged:
        raise RuntimeError(f"training the dense {spec.name} diverged (loss {outcome.final_loss})")
    accuracy, _ = measure(model, data, data.test)
    logger.info("dense %s reached %.2f%% test accuracy", spec.name, 100 * accuracy)
    save_weights(model.state_dict(), path, metadata={"test_accuracy": f"{accuracy:.6f}"})
    return f"trained:{path}"


class TrainingProgress:
    """Logs a long training's progress about every ``every`` of its steps, with the time left.

    The dense model's first training can take an hour on a CPU; without a word the
    user cannot tell a slow run from a hung one.
    """

    def __init__(self, total: int, what: str, *, every: float = 0.05, clock=time.monotonic) -> None:
        self.total = total
        self.what = what
        self.interval = max(1, round(every * total))
        self.clock = clock
        self.started = clock()

    def __call__(self, done: int, loss: float) -> None:
        if done % self.interval and done != self.total:
            return
        elapsed = self.clock() - self.started
        left = elapsed / done * (self.total - done)
        logger.info("training the dense %s: step %d/%d (%.0f%%), loss %.3f, about %s left",
                    self.what, done, self.total, 100 * done / self.total, loss, _duration(left))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
