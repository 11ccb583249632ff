"""Test helpers shipped with the package, as Optuna ships ``optuna/testing``.

:mod:`autoprune.testing.synthetic` builds search spaces and objectives with known optima
(numpy only); :mod:`autoprune.testing.driver` runs a searcher's ask/tell loop on them;
:mod:`autoprune.testing.searcher_suite` is the conformance suite every searcher runs
(it imports pytest, so it is not imported here).
"""
