"""torchvision's ``VisionTransformer``: the model keeps its stream width in ``hidden_dim``.

Its forward reshapes the patch embedding with ``self.hidden_dim``, which Torch-Pruning
does not know about, so a model whose stream was pruned failed on its first forward. The
width is the patch embedding's output channels, set again after pruning and after the
level database assembled a candidate. Its own parameters (the class token, and the
encoder's position embedding) are pruned with the stream and priced with its group
(the loose parameters of :mod:`autoprune.space.analysis`). Named by import path: autoprune
does not import torchvision.
"""

from __future__ import annotations

from torch import nn

from autoprune.space.layer_kinds.base import LayerKind, register


class VisionTransformerKind(LayerKind):
    """``torchvision.models.vision_transformer.VisionTransformer`` as a whole model."""

    type_names = ("torchvision.models.vision_transformer.VisionTransformer",)

    def after_pruning(self, module: nn.Module) -> None:
        module.hidden_dim = module.conv_proj.weight.shape[0]  # its shape, whatever order layers are fixed in

    def fix_shape(self, name: str, module: nn.Module) -> None:
        self.after_pruning(module)


class EncoderKind(LayerKind):
    """torchvision's ViT ``Encoder``: its own parameter is the position embedding, whose shape
    its tensor gives (pruned with the stream and priced with its group); no width attribute."""

    type_names = ("torchvision.models.vision_transformer.Encoder",)

    def fix_shape(self, name: str, module: nn.Module) -> None:
        return None


VISION_TRANSFORMER = register(VisionTransformerKind())
ENCODER = register(EncoderKind())
