"""Export a picked trial as ``model.safetensors`` plus a JSON ``recipe.json``, and load it back.

The recipe names the architecture (zoo name or factory, with its input and class
counts) and, per pruned group, the channel indices kept. Loading builds the dense
architecture, prunes it to those indices with Torch-Pruning, and loads the weights:
nothing is unpickled, and the model is physically small.

Loading never runs code the export folder names: zoo architectures are built by
autoprune itself; a factory's model only through a factory the caller names
(:func:`build_architecture`, one function per kind of model). An export is written into
a temporary folder beside ``--out`` and moved into place whole, so a full disk leaves no
half export and no empty folder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from safetensors import SafetensorError

from autoprune import __version__
from autoprune.errors import UserError
from autoprune.evaluation.training import measure
from autoprune.factory import is_factory_spec
from autoprune.models import MODEL_NAMES
from autoprune.space.counting import count
from autoprune.space.materialize import prune_to_indices
from autoprune.store.files import check_writable_folder, write_json_atomic
from autoprune.store.front import levels_of
from autoprune.tasks import ModelSpec
from autoprune.weights import load_weights, save_weights

if TYPE_CHECKING:
    from autoprune.api import Run

RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
RECIPE_FORMAT = "autoprune-export/1"
#: test samples the ONNX export is checked on against PyTorch
ONNX_CHECK_SAMPLES = 256

logger = logging.getLogger(__name__)


def export_trial(run: "Run", row: pd.Series, out: Path, *, steps: int | None,
                 export_format: str = "safetensors") -> dict[str, Any]:
    """Rebuild and fine-tune the trial in ``row``, measure it on the test split, write it to ``out``;
    with ``export_format="onnx"`` also ``model.onnx``, checked and timed in onnxruntime
    (:mod:`autoprune.onnx_export`; its summary in the recipe's ``onnx``)."""
    from autoprune.setup_run import check_same_space, prepare

    check_export_folder(out, steps)
    if run.quality.metric == "perplexity":
        from autoprune.llm.export import export_language_trial

        return export_language_trial(run, row, out, steps=steps)
    # the run's latency tables, not new ones; and the data it was searched on
    prepared = prepare(run.config, latency_model=run.latency_model, searched_data=run.record.data_fingerprint)
    check_same_space(run.record.space, prepared.space, str(run.path))
    levels = levels_of(row, prepared.space.group_names)
    fidelity = run.config.fidelity if steps is None else steps
    logger.info("fine-tuning trial %d for %d steps, then measuring it on the test split", int(row["trial_id"]), fidelity)
    evaluated = prepared.evaluator.run(levels, fidelity=fidelity, seed=run.config.seed)
    logger.info("fine-tuned in %.0f s", evaluated.metrics.get("train_seconds", 0.0))
    data = prepared.task.data
    test_accuracy, test_loss = measure(evaluated.model, data, data.test)
    metrics = {**evaluated.metrics, "val_accuracy": evaluated.metrics["accuracy"],
               "test_accuracy": test_accuracy, "test_loss": test_loss}
    recipe = {
        "format": RECIPE_FORMAT,
        "autoprune_version": __version__,
        "model_spec": prepared.task.model_spec.to_dict(),
        "never_prune": list(prepared.task.space_config.never_prune),
        "keep_indices": evaluated.keep_indices,
        "input_shape": list(data.input_shape),
        "normalization": {"mean": list(data.mean), "std": list(data.std), "scale": data.scale},
        "data": run.config.data,
        "run_dir": str(run.path),
        "trial_id": int(row["trial_id"]),
        "levels": [int(v) for v in levels],
        "finetune_steps": fidelity,
        "metrics": metrics,
        "dense": run.dense,
    }
    if export_format != "onnx":
        write_export(out, evaluated.model.state_dict(), recipe)
        return recipe
    from autoprune.onnx_export import ONNX_FILE, staged_onnx

    logger.info("exporting to ONNX and checking it in onnxruntime")
    inputs = data.normalize(data.test.x[:ONNX_CHECK_SAMPLES])
    folder, recipe["onnx"] = staged_onnx(evaluated.model, inputs, latency_batch_size=run.config.latency_batch_size)
    try:
        write_export(out, evaluated.model.state_dict(), recipe,
                     extra=lambda staging: shutil.copyfile(folder / ONNX_FILE, staging / ONNX_FILE))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return recipe


def check_export_folder(out: Path, steps: int | None) -> None:
    """Refuse an ``--out`` that is not (or cannot become) an export folder, and bad ``--steps``."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / RECIPE_FILE).exists())):
        raise UserError(f"{str(out)!r} exists and is not an export folder; choose another --out.")
    check_writable_folder(out, "--out")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise UserError(f"--steps must be a whole number >= 0, got {steps!r}.")
    if (out / RECIPE_FILE).exists():
        logger.warning("%s holds an earlier export; it will be replaced", out)


def write_export(out: Path, state: dict[str, torch.Tensor], recipe: dict[str, Any],
                 extra: Callable[[Path], None] | None = None) -> None:
    """Write weights and recipe (and what ``extra`` writes into the folder it is given, e.g.
    a tokenizer) into a temporary folder beside ``out``, then move it into place (an
    earlier export there is replaced only once the new one is whole). On a write error
    nothing is left: no temporary folder, no new empty ``out`` or parents."""
    made = _missing_parents(out.parent)
    staging: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
        save_weights(state, staging / WEIGHTS_FILE)
        write_json_atomic(staging / RECIPE_FILE, recipe)
        if extra is not None:
            extra(staging)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; an export is shared like any folder
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "export")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
        staging = None
    except OSError as exc:  # what check_writable_folder cannot foresee (a full disk, a read-only mount)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise UserError(f"{str(out)!r} could not be written ({exc.strerror}); "
                        f"{'free some space and export again' if full else 'choose another --out'}.") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            for folder in made:  # innermost first; only the empty ones we made
                try:
                    folder.rmdir()
                except OSError:
                    break


def _missing_parents(folder: Path) -> list[Path]:
    """The folders of ``folder``'s path that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _umask() -> int:
    from autoprune.store.files import file_mode

    return 0o666 & ~file_mode()


def read_recipe(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The recipe of the export folder ``path`` (or of its ``recipe.json``), and the folder.

    Anything but a path is refused first: ``Path(5)`` would fail with a TypeError that
    does not say what ``autoprune.load`` wanted."""
    if not isinstance(path, str) and not hasattr(path, "__fspath__"):  # str or os.PathLike
        raise UserError(f"autoprune.load expects the path of an export folder, got {type(path).__name__}.")
    path = Path(path)
    folder = path.parent if path.name == RECIPE_FILE else path
    recipe_file = folder / RECIPE_FILE
    if not recipe_file.is_file():
        raise UserError(f"{str(path)!r} is not an autoprune export (no {RECIPE_FILE}); "
                        "write one with `autoprune export RUN_DIR --out FOLDER`.")
    try:
        recipe = json.loads(recipe_file.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{str(recipe_file)!r} is damaged (not valid JSON).") from None
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise UserError(f"{str(recipe_file)!r} is not an export this version of autoprune can read.")
    return recipe, folder


def check_recipe_keys(recipe: dict[str, Any], keys: tuple[tuple[str, type, str], ...], folder: Path) -> None:
    """Refuse a recipe that misses a key loading reads, or holds it with the wrong type."""
    recipe_file = folder / RECIPE_FILE
    for key, kind, what in keys:
        if key not in recipe:
            raise UserError(f"{str(recipe_file)!r} has no {key!r}; the export is incomplete, export it again.")
        if not isinstance(recipe[key], kind):
            raise UserError(f"{str(recipe_file)!r} is damaged: its {key!r} is not {what}; export it again.")


#: what loading reads from a recipe: key, JSON type, and that type in words
RECIPE_KEYS: tuple[tuple[str, type, str], ...] = (
    ("model_spec", dict, "a mapping"), ("never_prune", list, "a list"), ("keep_indices", dict, "a mapping"),
    ("input_shape", list, "a list"), ("normalization", dict, "a mapping"),
)


def build_architecture(recipe: dict[str, Any], *, factory: str | None, source: str) -> torch.nn.Module:
    """The dense (unpruned) architecture a recipe names, built without importing anything
    the recipe names: a zoo model by autoprune, a factory's model only by the factory the
    caller gave. One branch per kind of model; ``source`` names the recipe in errors."""
    try:
        spec = ModelSpec.from_dict(recipe["model_spec"])
    except (KeyError, TypeError):
        raise UserError(f"{source} has no valid model_spec (name, in_channels, image_size, num_classes).") from None
    if not isinstance(spec.name, str):
        raise UserError(f"{source} names no model (its model_spec name is {spec.name!r}).")
    if factory is not None:
        return _build_factory_model(spec, factory)
    if is_factory_spec(spec.name):
        raise UserError(f"{source} names the model factory {spec.name!r}, code autoprune does not import on its own; "
                        f"if you trust it, load with autoprune.load(path, factory={spec.name!r}).")
    if spec.name in MODEL_NAMES:
        return _build_zoo_model(spec)
    raise UserError(f"{source} names the model {spec.name!r}, which autoprune does not know; zoo models: "
                    f"{', '.join(MODEL_NAMES)}.")


def _build_zoo_model(spec: ModelSpec) -> torch.nn.Module:
    for key in ("in_channels", "image_size", "num_classes"):
        value = getattr(spec, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"the recipe's model_spec has an invalid {key} {value!r}.")
    return spec.build()


def _build_factory_model(spec: ModelSpec, factory: str) -> torch.nn.Module:
    """The caller's own factory, called as a search calls it (the recipe's input and class counts)."""
    if not isinstance(factory, str) or not is_factory_spec(factory):
        raise UserError(f"factory must be text such as 'package.module:function', got {factory!r}.")
    return ModelSpec(name=factory, in_channels=spec.in_channels, image_size=spec.image_size,
                     num_classes=spec.num_classes).build()


def load_exported(path: str | Path, *, factory: str | None = None) -> torch.nn.Module:
    """The exported pruned model, in eval mode, carrying the input normalisation it was trained with.

    The model expects its inputs as the search fed them, not raw images, and recipe.json
    is easy to overlook; so the model's attribute ``autoprune_normalization``
    (``{"mean": [...], "std": [...], "scale": s}``) says how: for raw images ``x`` (N, C,
    H, W), the input is ``(x / scale - mean[c]) / std[c]`` per channel ``c``::

        n = model.autoprune_normalization
        mean, std = (torch.tensor(n[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
        logits = model((x.float() / n["scale"] - mean) / std)

    Built-in data is normalised per channel to mean 0 and std 1 (``scale`` is the pixels'
    range: 255, or 16 for digits); data from a user's factory is used as given (mean 0,
    std 1; scale 255 for uint8 images, 1 for floats)."""
    recipe, folder = read_recipe(path)
    if recipe.get("kind") == "language-model":
        if factory is not None:
            raise UserError("factory applies to image models built by a factory; a language-model export is rebuilt "
                            "from its own Hugging Face config, so leave it out.")
        from autoprune.llm.export import load_language_export

        return load_language_export(folder, recipe)
    check_recipe_keys(recipe, RECIPE_KEYS, folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{str(folder)!r} has no {WEIGHTS_FILE}.")
    try:  # plain lists and a float, easy to use and to print
        found = recipe["normalization"]
        normalization = {"mean": [float(v) for v in found["mean"]], "std": [float(v) for v in found["std"]],
                         "scale": float(found["scale"])}
    except (TypeError, KeyError, ValueError):
        raise UserError(f"the recipe in {str(folder)!r} has no valid input normalization "
                        "(mean and std per channel, and scale).") from None
    model = build_architecture(recipe, factory=factory, source=f"the recipe in {str(folder)!r}")
    try:
        example = torch.zeros(1, *recipe["input_shape"])
        prune_to_indices(model, recipe["keep_indices"], example, never_prune=recipe["never_prune"])
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise UserError(f"the recipe in {str(folder)!r} does not fit its architecture ({exc}); export it again.") from None
    load_export_weights(model, folder)
    model.autoprune_normalization = normalization
    return model.eval()


def load_export_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load an export folder's weights into the rebuilt ``model``, or say in one sentence why not."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{str(folder)!r} has no {WEIGHTS_FILE}.")
    try:
        state = load_weights(weights)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{str(weights)!r} is not a readable safetensors file, perhaps truncated ({exc}); "
                        "export it again.") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{str(weights)!r} does not match the architecture in the recipe ({exc}).") from None


def describe_exported(model: torch.nn.Module, recipe: dict[str, Any]) -> dict[str, Any]:
    """Counted FLOPs and params of a loaded model, relative to the dense model of its run."""
    counted = count(model, torch.zeros(1, *recipe["input_shape"]))
    return {"flops": counted.flops, "params": counted.params,
            "flops_ratio": counted.flops / recipe["dense"]["flops"],
            "params_ratio": counted.params / recipe["dense"]["params"]}
