"""autoprune: find where to prune a trained network.

``autoprune.search(...)`` runs a search and returns a :class:`Run`; ``Run.front`` is the
Pareto front as a DataFrame, ``Run.pick`` and ``Run.export`` select and write a model,
and ``autoprune.load(path)`` rebuilds an exported model without unpickling anything.

The API is imported lazily, so that ``autoprune.searchers`` and other torch-free parts
can be used without loading torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "UserError", "__version__", "load", "load_tokenizer", "open_run", "resume", "search"]


def __getattr__(name: str) -> Any:
    if name == "UserError":
        from autoprune.errors import UserError

        return UserError
    if name in ("Run", "load", "load_tokenizer", "open_run", "resume", "search"):
        from autoprune import api

        return getattr(api, name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
