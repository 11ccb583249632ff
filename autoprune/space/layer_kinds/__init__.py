"""One place per layer kind: how each is traced, counted, priced, timed and reshaped.

The built-in kinds (convolutions, linear layers, BatchNorm/InstanceNorm, LayerNorm,
GroupNorm, RMSNorm, PReLU, embeddings, multi-head attention, torchvision's ViT, Swin and
MaxViT) register themselves on import. A new kind is a :class:`LayerKind` subclass naming
its module types, overriding what applies, and one :func:`register` call; see
:mod:`autoprune.space.layer_kinds.base`.
"""

from autoprune.space.layer_kinds import (  # noqa: F401  (registers them)
    attention,
    channelwise,
    conv,
    embedding,
    linear,
    maxvit,
    swin,
    vision_transformer,
)
from autoprune.space.layer_kinds.base import (
    UNKNOWN,
    CannotPrice,
    LayerKind,
    PricedLayer,
    UnsupportedModel,
    kind_of,
    priced_modules,
    register,
    tp_pruners,
    unregister,
)

__all__ = ["UNKNOWN", "CannotPrice", "LayerKind", "PricedLayer", "UnsupportedModel", "kind_of", "priced_modules",
           "register", "tp_pruners", "unregister"]
