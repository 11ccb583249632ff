"""Searchers: propose candidates (``ask``), learn from results (``tell``). No torch here."""

from __future__ import annotations

from typing import Any

from autoprune.errors import UserError
from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.random_search import RandomSearcher
from autoprune.searchers.uniform import UniformSearcher

SEARCHERS: dict[str, type[Searcher]] = {cls.name: cls for cls in (UniformSearcher, RandomSearcher)}


def make_searcher(name: str, *, problem: Problem, seed: int, options: dict[str, Any] | None = None) -> Searcher:
    """The searcher called ``name``; an unknown name is refused with the known ones listed."""
    if name not in SEARCHERS:
        raise UserError(f"unknown searcher {name!r}; known searchers: {', '.join(sorted(SEARCHERS))}.")
    try:
        return SEARCHERS[name](problem=problem, seed=seed, **(options or {}))
    except TypeError as exc:
        raise UserError(f"searcher {name!r} does not take these options: {exc}.") from None


__all__ = ["SEARCHERS", "Problem", "Proposal", "Result", "Searcher", "make_searcher"]
