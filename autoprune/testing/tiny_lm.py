"""Tiny Hugging Face causal language models built from configs, for tests.

Tests must not download or ship real checkpoints, so they build small models of each
supported family from a config with random weights (seeded), and a word-level tokenizer
trained on a few sentences. :func:`save_tiny_model_dir` writes both as a real local model
directory (``save_pretrained``), which is what ``--model hf:PATH`` reads.

Needs the ``llm`` extra (transformers, tokenizers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the families the language-model path supports; each has a tiny config below
FAMILIES = ("llama", "qwen2", "mistral", "gpt2")

#: sizes small enough for a forward pass in milliseconds, large enough to prune
#: (GQA: 6 query heads sharing 2 key/value heads in the Llama-style families)
_TINY: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=True),
    "qwen2": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False),
    "mistral": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                    num_key_value_heads=2, head_dim=8, max_position_embeddings=256, sliding_window=None),
    "gpt2": dict(n_embd=48, n_inner=96, n_layer=3, n_head=6, n_positions=256),
}


def tiny_config(family: str, *, vocab_size: int = 128, **overrides: Any):
    """A small ``PretrainedConfig`` of ``family`` (one of :data:`FAMILIES`)."""
    from autoprune.llm.loading import transformers_module

    transformers = transformers_module()

    if family not in _TINY:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    classes = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "mistral": transformers.MistralConfig, "gpt2": transformers.GPT2Config}
    kwargs = {**_TINY[family], "vocab_size": vocab_size, **overrides}
    if family != "gpt2":
        kwargs.setdefault("pad_token_id", 0)
        kwargs.setdefault("bos_token_id", 1)
        kwargs.setdefault("eos_token_id", 2)
    else:
        kwargs.setdefault("bos_token_id", 1)
        kwargs.setdefault("eos_token_id", 2)
    return classes[family](**kwargs)


def tiny_model(family: str, *, seed: int = 0, vocab_size: int = 128, **overrides: Any):
    """A ``AutoModelForCausalLM`` of ``family`` with seeded random weights, in eval mode."""
    import torch

    from autoprune.llm.loading import transformers_module

    transformers = transformers_module()
    config = tiny_config(family, vocab_size=vocab_size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.eval()


def tiny_tokenizer(texts: list[str], *, vocab_size: int = 128):
    """A word-level fast tokenizer trained on ``texts`` (unknown words map to ``<unk>``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, matching the configs above
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def save_tiny_model_dir(path: str | Path, family: str, texts: list[str], *, seed: int = 0,
                        **overrides: Any) -> Path:
    """Write a tiny model of ``family`` and a tokenizer trained on ``texts`` to ``path``.

    The result is an ordinary local Hugging Face model directory (config, safetensors
    weights, tokenizer files)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(texts)
    model = tiny_model(family, seed=seed, vocab_size=max(len(tokenizer), 8), **overrides)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
