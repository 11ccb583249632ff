"""A language-model task: a Hugging Face causal LM, its tokenizer, and text cut into sequences.

The counterpart of :class:`autoprune.tasks.Task` for ``--model hf:PATH`` with
``--data text:PATH``. The dense model is the pretrained one (nothing is trained first), so
the whole task is ready once the model and the text are loaded; a gguf file is
dequantised once and cached (:mod:`autoprune.llm.loading`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.llm.loading import LMSpec, is_hf_model, resolve_lm
from autoprune.llm.text_data import DEFAULT_SEQ_LEN, TokenData, is_text_data, load_text_data
from autoprune.space.config import LANGUAGE_FAMILY, SpaceConfig, load_space_config

logger = logging.getLogger(__name__)


@dataclass
class LanguageTask:
    """Text data plus a pretrained causal LM, ready to be searched."""

    data: TokenData
    model_spec: LMSpec
    dense: nn.Module
    tokenizer: Any
    space_config: SpaceConfig
    weights_source: str
    #: where the model's files are (for a gguf file: its dequantised cache)
    model_dir: Path

    def example_input(self) -> torch.Tensor:
        return self.data.example_input(1)

    def data_fingerprint(self) -> str:
        return self.data.fingerprint


def check_language_pairing(model: str | None, data: str) -> None:
    """Refuse text data for an image model and image data for a language model, in one sentence."""
    language_model = model is not None and is_hf_model(model)
    if is_text_data(data) and not language_model:
        raise UserError(f"--data {data} is text, which only a language model reads; pass --model hf:PATH "
                        "(a local Hugging Face model directory or .gguf file).")
    if language_model and not is_text_data(data):
        raise UserError(f"--model {model} is a language model, but --data {data!r} is not text; pass "
                        "--data text:PATH (a text file or a folder of them).")


def prepare_language_task(
    *,
    model: str,
    data: str,
    seq_len: int | None = None,
    space_file: str | None = None,
    before_load: Callable[[LMSpec, SpaceConfig], None] | None = None,
) -> LanguageTask:
    """Load the model, its tokenizer and the text; refuse what does not fit, in one sentence.

    ``before_load`` is called once the model's files are found and the space file is read,
    before any weights load (the cheap checks of a run come first)."""
    check_language_pairing(model, data)
    spec = resolve_lm(model)
    space_config = load_space_config(LANGUAGE_FAMILY, space_file)
    if before_load is not None:
        before_load(spec, space_config)
    logger.info("loading %s", spec.source)
    loaded = spec.load()
    length = DEFAULT_SEQ_LEN if seq_len is None else seq_len
    tokens = load_text_data(data, loaded.tokenizer, seq_len=length, max_context=loaded.max_context)
    logger.info("text %s: %d training, %d held-out and %d test sequences of %d tokens (split by %s)", data,
                len(tokens.train), len(tokens.val), len(tokens.test), length, tokens.split_by)
    return LanguageTask(data=tokens, model_spec=spec, dense=loaded.model.eval(), tokenizer=loaded.tokenizer,
                        space_config=space_config, weights_source=f"pretrained:{spec.path}",
                        model_dir=loaded.model_dir)
