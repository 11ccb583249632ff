"""Import a user's ``package.module:attribute`` object with a clear error when it fails."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from autoprune.errors import UserError
from autoprune.torchvision_compat import make_torchvision_importable


def is_factory_spec(spec: str) -> bool:
    """True when ``spec`` looks like ``package.module:attribute`` rather than a built-in name."""
    if spec.startswith(("hf:", "text:")):  # a language model and its text: paths, not code
        return False
    return ":" in spec and not spec.startswith(("/", "."))


def import_object(spec: str, *, what: str) -> Any:
    """Return the object named by ``package.module:attribute``.

    Only ever called for a name the user gave (a flag, an option, ``--trust-factory``,
    ``autoprune.load(factory=...)``), never for one a file names on its own. The current
    directory is put on ``sys.path`` so that a user's own module next to their data is
    found, but *last*: an installed package of the same name wins over a file that
    happens to lie in the current folder. ``what`` names the option in error messages
    (for example ``"--model"``).
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UserError(f"{what} {spec!r} is not of the form package.module:factory.")
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    make_torchvision_importable()  # a factory may build a torchvision model beside CPU torch
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error inside the user's module is still their input
        raise UserError(
            f"{what} {spec!r} could not be imported ({type(exc).__name__}: {exc}); "
            "check the module name and that it imports on its own."
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what} {spec!r}: module {module_name!r} has no attribute {attribute!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{what} {spec!r} names {type(obj).__name__}, not a callable factory.")
    return obj
