"""autoprune inside the tools people already run their experiments with.

- :mod:`autoprune.integrations.pruning`: a task made ready to prune from another
  library's loop (space, budget, evaluator), as ``autoprune search`` prepares it.
- :mod:`autoprune.integrations.optuna`: an objective for an Optuna user's own study.
- :mod:`autoprune.integrations.tune`: any autoprune searcher as a Ray Tune searcher, the
  evaluator as a Tune trainable, and a Tune run imported into an autoprune run directory.

Each imports its library only when used; nothing here is needed by ``autoprune search``.
"""
