"""Make torchvision importable beside a CPU-only torch.

The torchvision wheel on the package index is built against CUDA torch. Beside the CPU
torch this project pins, its C++ extension (``torchvision/_C.so``) cannot load (it links
CUDA libraries), which torchvision tolerates for its Python code, but it then registers
fake kernels for the ``torchvision::nms`` and ``qnms`` operators without checking, and the
import fails (``operator torchvision::nms does not exist``). transformers imports
torchvision whenever it is installed, so one such wheel breaks even language models.

:func:`make_torchvision_importable` declares the two operators' schemas, without kernels,
when and only when the extension cannot load, before torchvision is imported. The
classification models use none of torchvision's C++ operators; calling ``nms`` still
fails, with "no kernel", as it should. Where the extension loads (a matching build),
nothing is done.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the schema declarations live as long as this object


def make_torchvision_importable() -> bool:
    """Declare torchvision's ``nms``/``qnms`` schemas if its extension cannot load; return
    whether they were declared. Harmless when torchvision is absent, already imported, or
    a build whose extension loads."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    folder = Path(next(iter(spec.submodule_search_locations)))
    extension = next(iter(sorted(folder.glob("_C.*"))), None)
    if extension is not None:
        try:
            torch.ops.load_library(str(extension))
            return False  # a build that matches this torch: its own schemas are there
        except (OSError, RuntimeError) as exc:
            logger.debug("torchvision's extension does not load (%s); declaring its nms schemas", exc)
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)
    return True
