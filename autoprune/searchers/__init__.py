"""Searchers: propose candidates (``ask``), learn from results (``tell``). No torch here."""

from __future__ import annotations

import inspect
from typing import Any

from autoprune.errors import UserError
from autoprune.searchers.base import Problem, Proposal, Result, Searcher
from autoprune.searchers.darwin import DarwinSearcher
from autoprune.searchers.dp import DPSearcher
from autoprune.searchers.emo import EmoSearcher
from autoprune.searchers.emo_pms import EmoPmsSearcher
from autoprune.searchers.global_ranking import GlobalSearcher
from autoprune.searchers.optuna_sampler import OptunaSearcher
from autoprune.searchers.random_search import RandomSearcher
from autoprune.searchers.tyr import TyrSearcher
from autoprune.searchers.uniform import UniformSearcher

SEARCHERS: dict[str, type[Searcher]] = {
    cls.name: cls for cls in (UniformSearcher, RandomSearcher, DarwinSearcher, TyrSearcher, EmoSearcher,
                              EmoPmsSearcher, DPSearcher, GlobalSearcher, OptunaSearcher)
}


def make_searcher(name: str, *, problem: Problem, seed: int, options: dict[str, Any] | None = None) -> Searcher:
    """The searcher called ``name``; an unknown name is refused with the known ones listed."""
    if name not in SEARCHERS:
        raise UserError(f"unknown searcher {name!r}; known searchers: {', '.join(sorted(SEARCHERS))}.")
    cls = SEARCHERS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "problem", "seed")]
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise UserError(f"searcher {name!r} has no options {unknown}; its options: {', '.join(accepted) or 'none'}.")
    try:
        return cls(problem=problem, seed=seed, **(options or {}))
    except ValueError as exc:
        raise UserError(f"searcher {name!r}: {exc}.") from None


def check_searcher(name: str, options: dict[str, Any] | None) -> None:
    """Refuse an unknown searcher or a bad option before anything slow runs (loading data,
    training a dense model on first use can take many minutes): the searcher is built once
    on a small stand-in problem, which runs the checks its constructor runs on the real one.
    The stand-in has a latency model, so an option that needs one (``emo``'s latency
    objective) is checked against the real problem only, when the searcher is built; it
    has three stages, as ``emo-pms`` needs."""
    from autoprune.space.budget import Constraints
    from autoprune.space.levels import LevelGrid
    from autoprune.testing.synthetic import (chain_latency_model, chain_space, even_stages, make_problem,
                                            synthetic_channel_scores)

    space = chain_space([16, 16, 16], LevelGrid.from_step(step=1 / 16, min_ratio=1 / 16))
    limits = make_problem(space, 0.5).constraints.limits
    stand_in = Problem(space=space, constraints=Constraints(limits=limits, latency_model=chain_latency_model(space)),
                       channel_scores=synthetic_channel_scores(space), stages=lambda: even_stages(space, 3))
    make_searcher(name, problem=stand_in, seed=0, options=options)


__all__ = ["SEARCHERS", "Problem", "Proposal", "Result", "Searcher", "check_searcher", "make_searcher"]
