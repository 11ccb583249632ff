"""Export a pruned language model, and load it back in any process without running its files' code.

An export folder holds ``model.safetensors`` (the pruned weights; a tied output layer is
stored once, :func:`autoprune.weights.save_weights`), ``recipe.json`` (the dense architecture's Hugging Face config, the kept
head and neuron indices per group, metrics) and the tokenizer's files. Loading builds the
dense architecture from the config with ``AutoModelForCausalLM.from_config`` (only the
families autoprune prunes; ``trust_remote_code`` never), prunes it to the recorded
indices, and loads the weights: per-layer sizes may differ, which no Hugging Face config
can express, so the recipe is what describes them.

Where every layer kept the same sizes and no sub-block was removed, the export also holds
``hf/``, an ordinary ``save_pretrained`` directory any transformers install loads;
otherwise the recipe says why there is none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.llm.loading import SUPPORTED_MODEL_TYPES, require_llm_extra, transformers_module
from autoprune.llm.lm_evaluator import split_perplexity
from autoprune.llm.prune import prune_to_indices
from autoprune.llm.space import parse_group_name

if TYPE_CHECKING:
    import pandas as pd

    from autoprune.api import Run

logger = logging.getLogger(__name__)

KIND = "language-model"
HF_FOLDER = "hf"
#: what loading a language-model export reads: key, JSON type, and that type in words
RECIPE_KEYS: tuple[tuple[str, type, str], ...] = (
    ("hf_config", dict, "a mapping"), ("keep_indices", dict, "a mapping"),
)


def export_language_trial(run: "Run", row: "pd.Series", out: Path, *, steps: int | None) -> dict[str, Any]:
    """Rebuild the trial in ``row``, distil it ``steps`` steps, score it on the test split, write it to ``out``."""
    from autoprune import __version__
    from autoprune.store.front import levels_of
    from autoprune.export import RECIPE_FORMAT, WEIGHTS_FILE, write_export
    from autoprune.setup_run import check_same_model, check_same_space, prepare

    prepared = prepare(run.config, searched_data=run.record.data_fingerprint)
    try:
        check_same_space(run.record.space, prepared.space, str(run.path))
        check_same_model(run.record.model_spec, prepared, str(run.path))
        levels = levels_of(row, prepared.space.group_names)
        fidelity = run.config.fidelity if steps is None else steps
        logger.info("retraining trial %d for %d steps, then scoring it on the test split", int(row["trial_id"]),
                    fidelity)
        evaluated = prepared.evaluator.run(levels, fidelity=fidelity, seed=run.config.seed)
        data, config = prepared.task.data, prepared.evaluator.config
        test = split_perplexity(evaluated.model, data.test, batch_size=config.eval_batch_size, device=config.device)
        dense_test = split_perplexity(prepared.task.dense, data.test, batch_size=config.eval_batch_size,
                                      device=config.device)
    finally:
        prepared.executor.close()
    model = evaluated.model
    uniform, why_not = uniform_sizes(model, evaluated.keep_indices)
    recipe = {
        "format": RECIPE_FORMAT,
        "kind": KIND,
        "autoprune_version": __version__,
        "model_spec": prepared.task.model_spec.to_dict(),
        "hf_config": prepared.task.dense.config.to_dict(),
        "keep_indices": evaluated.keep_indices,
        "seq_len": data.seq_len,
        "data": run.config.data,
        "run_dir": str(run.path),
        "trial_id": int(row["trial_id"]),
        "levels": [int(v) for v in levels],
        "finetune_steps": fidelity,
        "metrics": {**evaluated.metrics, "test_loss": test["loss"], "test_perplexity": test["perplexity"]},
        "dense": run.dense,
        "dense_test": dense_test,
        "hf_directory": HF_FOLDER if uniform else None,
        "hf_directory_missing_because": why_not,
    }
    tokenizer = prepared.task.tokenizer

    def extra_files(folder: Path) -> None:
        tokenizer.save_pretrained(folder)
        if uniform:
            _save_uniform(model, folder / HF_FOLDER, tokenizer)

    write_export(out, model.state_dict(), recipe, extra=extra_files)
    logger.info("wrote %s and %s", out / WEIGHTS_FILE, "its hf/ directory" if uniform else "no hf/ directory")
    return recipe


def uniform_sizes(model: nn.Module, keep_indices: dict[str, list[int]]) -> tuple[bool, str | None]:
    """Whether every block kept the same heads and FFN width (so one HF config describes the
    model), and if not, why not."""
    if any(len(kept) == 0 for kept in keep_indices.values()):
        return False, ("some attention or MLP sub-blocks were removed, which a Hugging Face config cannot express; "
                       "load it with autoprune.load")
    n_layers = int(getattr(model.config, "num_hidden_layers", getattr(model.config, "n_layer", 0)))
    for kind in ("attn", "mlp"):
        sizes = {len(kept) for name, kept in keep_indices.items() if parse_group_name(name)[1] == kind}
        pruned_layers = sum(1 for name in keep_indices if parse_group_name(name)[1] == kind)
        if len(sizes) > 1 or (sizes and pruned_layers < n_layers):
            return False, (f"the blocks kept different {'attention heads' if kind == 'attn' else 'FFN widths'}, "
                           "which a Hugging Face config (one size for every layer) cannot express; load it with "
                           "autoprune.load")
    return True, None


def _save_uniform(model: nn.Module, folder: Path, tokenizer: Any) -> None:
    """``save_pretrained`` with the config's sizes set to the pruned ones (all layers alike)."""
    import copy

    config = copy.deepcopy(model.config)
    first = _first_block(model)
    if config.model_type == "gpt2":
        attention = first.attn
        config.n_head = int(attention.num_heads)
        config.n_inner = int(first.mlp.c_fc.weight.shape[1])
    else:
        attention = first.self_attn
        head_dim = int(getattr(attention, "head_dim", config.hidden_size // config.num_attention_heads))
        config.head_dim = head_dim
        config.num_attention_heads = int(attention.q_proj.out_features // head_dim)
        config.num_key_value_heads = int(attention.k_proj.out_features // head_dim)
        config.intermediate_size = int(first.mlp.up_proj.out_features)
    original = model.config
    model.config = config
    try:
        model.save_pretrained(folder)
    finally:
        model.config = original
    tokenizer.save_pretrained(folder)


def _first_block(model: nn.Module) -> nn.Module:
    if model.config.model_type == "gpt2":
        return model.transformer.h[0]
    return model.model.layers[0]


def load_language_export(folder: Path, recipe: dict[str, Any]) -> nn.Module:
    """The pruned language model of an export folder, in eval mode; its tokenizer is
    ``model.autoprune_tokenizer`` (also :func:`load_tokenizer`)."""
    from autoprune.export import check_recipe_keys, load_export_weights

    check_recipe_keys(recipe, RECIPE_KEYS, folder)
    require_llm_extra()
    transformers = transformers_module()

    config_data = dict(recipe["hf_config"])
    model_type = config_data.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"the recipe in {str(folder)!r} names the model type {model_type!r}; autoprune loads "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)} only.")
    for key in ("auto_map", "trust_remote_code"):
        config_data.pop(key, None)  # never code from the folder
    try:
        config = transformers.AutoConfig.for_model(**config_data)
        with torch.random.fork_rng(devices=[]):
            model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        prune_to_indices(model, {str(k): [int(i) for i in v] for k, v in recipe["keep_indices"].items()})
    except UserError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise UserError(f"the recipe in {str(folder)!r} does not fit its architecture ({exc}); export it again.") from None
    load_export_weights(model, folder)
    model.autoprune_tokenizer = load_tokenizer(folder)
    return model.eval()


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer saved in an export folder (its JSON files; no code runs), or None without one."""
    transformers = transformers_module()
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"the tokenizer files in {str(folder)!r} cannot be read ({exc}); export it again.") from None
