"""autoprune: find where to prune a trained network.

``autoprune.search(...)`` runs a search and returns a :class:`Run`; ``Run.front`` is the
Pareto front as a DataFrame, ``Run.pick`` and ``Run.export`` select and write a model,
and ``autoprune.load(path)`` rebuilds an exported model without unpickling anything.
"""

__version__ = "0.1.0"

from autoprune.api import Run, load, open_run, resume, search  # noqa: E402
from autoprune.errors import UserError  # noqa: E402

__all__ = ["Run", "UserError", "__version__", "load", "open_run", "resume", "search"]
