"""``optuna`` passes the shared conformance suite with TPE, NSGA-II and the other cheap samplers."""

from __future__ import annotations

from types import MappingProxyType

from autoprune.testing.searcher_suite import SearcherTestCase


class TestOptunaTPE(SearcherTestCase):
    searcher_name = "optuna"
    searcher_options = MappingProxyType({"sampler": "tpe"})
    max_proposals = 24  # past TPE's 10 start-up draws, so its model proposes


class TestOptunaNSGA2(SearcherTestCase):
    searcher_name = "optuna"
    searcher_options = MappingProxyType({"sampler": "nsga2", "population_size": 8})
    max_proposals = 24  # three generations


class TestOptunaTPEMultiObjective(SearcherTestCase):
    searcher_name = "optuna"
    searcher_options = MappingProxyType({"sampler": "tpe", "objectives": ["error", "flops", "params"],
                                         "n_startup_trials": 4})


class TestOptunaNSGA3(SearcherTestCase):
    searcher_name = "optuna"
    searcher_options = MappingProxyType({"sampler": "nsga3", "population_size": 6,
                                         "objectives": "error,flops,params"})


class TestOptunaCmaEs(SearcherTestCase):
    searcher_name = "optuna"
    searcher_options = MappingProxyType({"sampler": "cmaes", "n_startup_trials": 4})


class TestOptunaRandom(SearcherTestCase):
    searcher_name = "optuna"
    searcher_options = MappingProxyType({"sampler": "random"})
