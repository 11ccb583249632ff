"""A classifier's output in training mode: its logits, and auxiliary logits where it has them.

GoogLeNet and Inception v3 return a named tuple in training mode (``GoogLeNetOutputs``:
logits and two auxiliary classifiers' logits; ``InceptionOutputs``: logits and one), and
their logits alone in eval mode. Retraining a pruned candidate trains the auxiliary heads
too, as the model was trained: each auxiliary classifier's cross-entropy is added with
weight :data:`AUX_WEIGHT`, the weight of the GoogLeNet paper (Szegedy et al., 2015),
used for Inception v3's single auxiliary head as well. Distillation matches the main
logits only (the teacher runs in eval mode, where the model returns nothing else), and
every score reads the main logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: weight of each auxiliary classifier's cross-entropy in the training loss
AUX_WEIGHT = 0.3


class UnusableOutput(ValueError):
    """A model output that holds no logits autoprune can train or score on."""


def split_output(output: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits, auxiliary logits)`` of a model's output: a tensor, or a tuple or list
    (named tuples included) whose first item is the logits; further tensors of the same
    shape are auxiliary logits, and ``None`` items (an auxiliary head switched off) are
    skipped. Raises :class:`UnusableOutput` for anything else."""
    if isinstance(output, torch.Tensor):
        return output, []
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        main = output[0]
        auxiliary = []
        for item in output[1:]:
            if item is None:
                continue
            if not isinstance(item, torch.Tensor) or item.shape != main.shape:
                shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
                raise UnusableOutput(f"a {type(output).__name__} whose later item is {shape}, not logits shaped like "
                                     f"its first {tuple(main.shape)}")
            auxiliary.append(item)
        return main, auxiliary
    raise UnusableOutput(f"a {type(output).__name__}, not a tensor of logits or a tuple whose first item is one")


def logits_of(output: object) -> torch.Tensor:
    """The main logits of a model's output (see :func:`split_output`)."""
    return split_output(output)[0]


def auxiliary_loss(auxiliary: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor | float:
    """:data:`AUX_WEIGHT` times the summed cross-entropy of the auxiliary logits (0 without any)."""
    if not auxiliary:
        return 0.0
    return AUX_WEIGHT * sum(F.cross_entropy(a.float(), labels) for a in auxiliary)
