"""Pieces every model of the zoo shares: argument checks, initialisation, spatial sizes.

The zoo's models are built from plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear``
modules, without in-place tensor arithmetic, so that Torch-Pruning's dependency graph
traces them cleanly and can remove channels physically. Each model keeps its final
``nn.Linear`` as the attribute ``classifier``: the one layer whose outputs (the classes)
must never be pruned.
"""

from __future__ import annotations

from torch import nn


def require_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` when it is an int of at least ``minimum``, else raise ``ValueError``.

    Booleans are refused although Python counts them as ints: ``in_channels=True`` is
    always a mistake, never a request for one channel.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def conv_output_size(size: int, *, stride: int) -> int:
    """Spatial size after a 3x3 convolution with padding 1 (ceil of ``size / stride``)."""
    return (size - 1) // stride + 1


def init_weights(model: nn.Module) -> None:
    """Initialise a freshly built model the way its papers do.

    Convolutions get He (Kaiming) normal initialisation scaled by fan-out, which keeps
    activations at a stable scale through ReLU networks; BatchNorm starts as the identity
    (weight 1, bias 0); linear layers keep PyTorch's fan-in scaled default but start with
    a zero bias so that no class is favoured before training. Every draw comes from
    torch's global generator, so ``torch.manual_seed`` makes construction reproducible.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
