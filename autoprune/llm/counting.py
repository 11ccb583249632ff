"""Count FLOPs (MACs) and params of a built causal LM, without the cost model.

:func:`count_lm` runs the model once on ``seq_len`` tokens and adds up what actually
ran: every linear (and GPT-2 ``Conv1D``) call as ``tokens x in x out``, and every
attention's score and value products as ``2 x T_q x T_k x query width`` (the full
matrix; the causal mask is not subtracted). Params are read from the parameters
themselves. The space's cost model must equal these numbers for every candidate.

:func:`flop_counter_macs` is a second, independent reference: PyTorch's
``FlopCounterMode``. On CPU, ``scaled_dot_product_attention`` dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's flop registry does
not list, so the attention products would count as zero; the counter is given torch's
own ``sdpa_flop_count`` for that kernel (it counts the full ``T x T`` product whatever
``is_causal`` says, as the GPU kernels' formulas do).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMCount:
    """MACs of one sequence of ``seq_len`` tokens, and params.

    ``params`` counts every parameter once (a tied embedding once);
    ``params_non_embedding`` leaves out the token and position embeddings and the
    output head (the token embedding itself when tied)."""

    flops: int
    params: int
    params_non_embedding: int


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")


def _query_width(module: nn.Module) -> int | None:
    """Query features of an attention module (None: not an attention)."""
    if isinstance(getattr(module, "q_proj", None), nn.Linear):
        return module.q_proj.out_features
    c_attn = getattr(module, "c_attn", None)
    if c_attn is not None and _is_conv1d(c_attn):
        return c_attn.weight.shape[1] // 3
    return None


def count_lm(model: nn.Module, seq_len: int) -> LMCount:
    """Run ``model`` on one sequence of ``seq_len`` tokens and count what ran."""
    total = 0
    hooks = []

    def linear_hook(module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        nonlocal total
        x = inputs[0]
        if isinstance(module, nn.Linear):
            total += (x.numel() // module.in_features) * module.in_features * module.out_features
        else:
            in_features, out_features = module.weight.shape
            total += (x.numel() // in_features) * in_features * out_features

    def attention_hook(module: nn.Module, _inputs: tuple, kwargs: dict, _output: object) -> None:
        nonlocal total
        hidden = kwargs.get("hidden_states", _inputs[0] if _inputs else None)
        tokens = hidden.shape[-2]
        total += 2 * tokens * tokens * _query_width(module)

    for module in model.modules():
        if isinstance(module, nn.Linear) or _is_conv1d(module):
            hooks.append(module.register_forward_hook(linear_hook))
        elif _query_width(module) is not None:
            hooks.append(module.register_forward_hook(attention_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(input_ids=torch.zeros(1, seq_len, dtype=torch.long), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return LMCount(flops=total, params=_params(model), params_non_embedding=_params(model, embeddings=False))


def _params(model: nn.Module, *, embeddings: bool = True) -> int:
    skip: set[int] = set()
    if not embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                skip.update(id(p) for p in module.parameters())
        head = model.get_output_embeddings()
        if head is not None:
            skip.update(id(p) for p in head.parameters())
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() yields a shared tensor once
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def flop_counter_macs(model: nn.Module, seq_len: int) -> int:
    """MACs of one forward pass on ``seq_len`` tokens as ``torch.utils.flop_counter`` sees them."""
    from torch.utils import flop_counter

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        model(input_ids=torch.zeros(1, seq_len, dtype=torch.long), use_cache=False)
    flops = counter.get_total_flops()
    if flops % 2:
        raise ValueError(f"FlopCounterMode counted an odd number of flops ({flops}); expected 2 per MAC")
    return flops // 2
