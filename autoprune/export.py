"""Export a picked trial as ``model.safetensors`` plus a JSON ``recipe.json``, and load it back.

The recipe names the architecture (zoo name or factory, with its input and class
counts) and, per pruned group, the channel indices kept. Loading builds the dense
architecture, prunes it to those indices with Torch-Pruning, and loads the weights:
nothing is unpickled, and the model is physically small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from safetensors.torch import load_file

from autoprune import __version__
from autoprune.errors import UserError
from autoprune.evaluation.training import measure
from autoprune.space.counting import count
from autoprune.space.materialize import prune_to_indices
from autoprune.store.files import write_json_atomic
from autoprune.tasks import ModelSpec
from autoprune.weights import save_weights

if TYPE_CHECKING:
    from autoprune.api import Run

RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
RECIPE_FORMAT = "autoprune-export/1"


def export_trial(run: "Run", row: pd.Series, out: Path, *, steps: int | None) -> dict[str, Any]:
    """Rebuild and fine-tune the trial in ``row``, measure it on the test split, write it to ``out``."""
    from autoprune.api import levels_of
    from autoprune.setup_run import check_same_space, prepare

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / RECIPE_FILE).exists())):
        raise UserError(f"{str(out)!r} exists and is not an export folder; choose another --out.")
    if steps is not None and steps < 0:
        raise UserError(f"--steps must be >= 0, got {steps}.")
    prepared = prepare(run.config)
    check_same_space(run.info["space"], prepared.space, str(run.path))
    levels = levels_of(row, prepared.space)
    fidelity = run.config.fidelity if steps is None else steps
    evaluated = prepared.evaluator.run(levels, fidelity=fidelity, seed=run.config.seed)
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
    out.mkdir(parents=True, exist_ok=True)
    save_weights(evaluated.model.state_dict(), out / WEIGHTS_FILE)
    write_json_atomic(out / RECIPE_FILE, recipe)
    return recipe


def read_recipe(path: Path) -> tuple[dict[str, Any], Path]:
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


def load_exported(path: Path) -> torch.nn.Module:
    """The exported pruned model, in eval mode."""
    recipe, folder = read_recipe(path)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{str(folder)!r} has no {WEIGHTS_FILE}.")
    model = ModelSpec.from_dict(recipe["model_spec"]).build()
    example = torch.zeros(1, *recipe["input_shape"])
    prune_to_indices(model, recipe["keep_indices"], example, never_prune=recipe["never_prune"])
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise UserError(f"{str(weights)!r} does not match the architecture in the recipe ({exc}).") from None
    return model.eval()


def describe_exported(model: torch.nn.Module, recipe: dict[str, Any]) -> dict[str, Any]:
    """Counted FLOPs and params of a loaded model, relative to the dense model of its run."""
    counted = count(model, torch.zeros(1, *recipe["input_shape"]))
    return {"flops": counted.flops, "params": counted.params,
            "flops_ratio": counted.flops / recipe["dense"]["flops"],
            "params_ratio": counted.params / recipe["dense"]["params"]}
