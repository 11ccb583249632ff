"""Where the decoder blocks of a Hugging Face causal LM keep their attention and MLP.

Two layouts cover the supported families:

- ``llama`` (Llama, Qwen2, Mistral): ``model.layers[i].self_attn.{q,k,v,o}_proj``,
  ``mlp.{gate,up,down}_proj``, ``input_layernorm`` before attention and
  ``post_attention_layernorm`` before the MLP; grouped-query attention with
  ``num_key_value_heads`` key/value heads shared by consecutive query heads.
- ``gpt2``: ``transformer.h[i].attn.c_attn`` (query, key and value fused in one
  ``Conv1D`` whose weight is stored transposed, ``(in, out)``), ``attn.c_proj``,
  ``mlp.c_fc``/``mlp.c_proj``, ``ln_1``/``ln_2``; every query head has its own key/value
  head.

Every other module stays where it is; only these are sliced by the pruner, priced by the
space and read back by the counter. The dense sizes are read from the modules' weights,
not only from the config, so what the space prices is what the model holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from autoprune.errors import UserError

logger = logging.getLogger(__name__)

#: ``config.model_type`` of each supported family, and the layout its blocks follow
LAYOUTS = {"llama": "llama", "qwen2": "llama", "mistral": "llama", "gpt2": "gpt2"}
SUPPORTED_FAMILIES = tuple(LAYOUTS)


@dataclass(frozen=True)
class BlockDims:
    """Dense sizes and parameter names of one decoder block.

    ``attn_bias`` / ``mlp_bias`` name the projections that carry a bias; ``*_norm_params``
    are the parameters of the normalisation in front of each sub-block (weight, and bias
    for LayerNorm)."""

    index: int
    path: str
    attn: str
    mlp: str
    attn_norm: str
    mlp_norm: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    attn_bias: frozenset[str]
    mlp_bias: frozenset[str]
    attn_norm_params: int
    mlp_norm_params: int

    @property
    def heads_per_kv(self) -> int:
        """Query heads sharing one key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class LMStructure:
    """The decoder blocks of a causal LM and the parts around them that are never pruned."""

    model_type: str
    layout: str
    hidden_size: int
    vocab_size: int
    blocks: tuple[BlockDims, ...]
    #: parameter names of the input token embedding and (GPT-2) position embedding
    embedding_params: tuple[str, ...]
    lm_head: str
    tied: bool
    final_norm_params: int
    position_embedding_params: int
    lm_head_bias: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def model_type_of(model: nn.Module) -> str:
    """``config.model_type`` of a Hugging Face model ('' for anything else)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "")


def find_structure(model: nn.Module) -> LMStructure:
    """Locate every decoder block's attention and MLP of ``model`` (a dense causal LM).

    Raises :class:`UserError` for an architecture outside :data:`SUPPORTED_FAMILIES`."""
    model_type = model_type_of(model)
    layout = LAYOUTS.get(model_type)
    if layout is None:
        raise UserError(
            f"autoprune cannot prune a {type(model).__name__} (model_type {model_type or 'unknown'!r}); "
            f"supported causal LM families are {', '.join(SUPPORTED_FAMILIES)}."
        )
    try:
        return _llama_structure(model, model_type) if layout == "llama" else _gpt2_structure(model, model_type)
    except AttributeError as exc:
        raise UserError(
            f"the {type(model).__name__} does not have the {model_type} module layout autoprune expects ({exc})."
        ) from None


def _bias_names(module: nn.Module, names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n for n in names if getattr(module.get_submodule(n), "bias", None) is not None)


def _norm_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _bias_size(module: nn.Module) -> int:
    bias = getattr(module, "bias", None)
    return 0 if bias is None else bias.numel()


def _llama_structure(model: nn.Module, model_type: str) -> LMStructure:
    blocks = []
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        head_dim = int(attn.head_dim)
        num_heads = attn.q_proj.weight.shape[0] // head_dim
        num_kv = attn.k_proj.weight.shape[0] // head_dim
        _check_heads(model, i, num_heads, num_kv)
        blocks.append(BlockDims(
            index=i, path=f"model.layers.{i}", attn=f"model.layers.{i}.self_attn", mlp=f"model.layers.{i}.mlp",
            attn_norm=f"model.layers.{i}.input_layernorm", mlp_norm=f"model.layers.{i}.post_attention_layernorm",
            num_heads=num_heads, num_kv_heads=num_kv, head_dim=head_dim,
            intermediate=mlp.gate_proj.weight.shape[0],
            attn_bias=_bias_names(attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
            mlp_bias=_bias_names(mlp, ("gate_proj", "up_proj", "down_proj")),
            attn_norm_params=_norm_params(layer.input_layernorm),
            mlp_norm_params=_norm_params(layer.post_attention_layernorm),
        ))
    embed = model.model.embed_tokens.weight
    return LMStructure(
        model_type=model_type, layout="llama", hidden_size=embed.shape[1], vocab_size=embed.shape[0],
        blocks=tuple(blocks), embedding_params=("model.embed_tokens.weight",), lm_head="lm_head",
        tied=model.lm_head.weight is embed, final_norm_params=_norm_params(model.model.norm),
        position_embedding_params=0, lm_head_bias=_bias_size(model.lm_head),
    )


def _gpt2_structure(model: nn.Module, model_type: str) -> LMStructure:
    blocks = []
    hidden = model.transformer.wte.weight.shape[1]
    for i, layer in enumerate(model.transformer.h):
        attn, mlp = layer.attn, layer.mlp
        if getattr(attn, "is_cross_attention", False) or hasattr(layer, "crossattention"):
            raise UserError("autoprune cannot prune a GPT-2 with cross-attention (add_cross_attention); use a plain causal LM.")
        head_dim = int(attn.head_dim)
        num_heads = attn.c_attn.weight.shape[1] // (3 * head_dim)
        _check_heads(model, i, num_heads, num_heads)
        blocks.append(BlockDims(
            index=i, path=f"transformer.h.{i}", attn=f"transformer.h.{i}.attn", mlp=f"transformer.h.{i}.mlp",
            attn_norm=f"transformer.h.{i}.ln_1", mlp_norm=f"transformer.h.{i}.ln_2",
            num_heads=num_heads, num_kv_heads=num_heads, head_dim=head_dim,
            intermediate=mlp.c_fc.weight.shape[1],
            attn_bias=_bias_names(attn, ("c_attn", "c_proj")),
            mlp_bias=_bias_names(mlp, ("c_fc", "c_proj")),
            attn_norm_params=_norm_params(layer.ln_1), mlp_norm_params=_norm_params(layer.ln_2),
        ))
    wte = model.transformer.wte.weight
    return LMStructure(
        model_type=model_type, layout="gpt2", hidden_size=hidden, vocab_size=wte.shape[0], blocks=tuple(blocks),
        embedding_params=("transformer.wte.weight", "transformer.wpe.weight"), lm_head="lm_head",
        tied=model.lm_head.weight is wte, final_norm_params=_norm_params(model.transformer.ln_f),
        position_embedding_params=model.transformer.wpe.weight.numel(), lm_head_bias=_bias_size(model.lm_head),
    )


def _check_heads(model: nn.Module, index: int, num_heads: int, num_kv: int) -> None:
    if num_heads < 1 or num_kv < 1 or num_heads % num_kv:
        raise UserError(
            f"block {index} of the {type(model).__name__} has {num_heads} query and {num_kv} key/value heads; "
            "autoprune needs the query heads to be a multiple of the key/value heads."
        )
