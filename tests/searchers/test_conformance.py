"""Every built-in searcher passes the shared conformance suite."""

from __future__ import annotations

from types import MappingProxyType

from autoprune.testing.searcher_suite import SearcherTestCase


class TestUniform(SearcherTestCase):
    searcher_name = "uniform"


class TestRandom(SearcherTestCase):
    searcher_name = "random"


class TestRandomWithoutFill(SearcherTestCase):
    searcher_name = "random"
    searcher_options = MappingProxyType({"use_budget": False})


class TestDP(SearcherTestCase):
    searcher_name = "dp"
    max_proposals = 80  # its probes (one per group and level), additivity checks and allocations
    # the synthetic quality is separable, so its distortion adds up exactly and the DP's
    # allocation at the full budget is the optimum up to the cost cells' rounding
    optimality_tolerance = 0.01


class TestDPMSE(SearcherTestCase):
    searcher_name = "dp"
    searcher_options = MappingProxyType({"distortion": "mse", "additivity_checks": 0, "budget_fractions": [1.0]})
    max_proposals = 80


class TestGlobal(SearcherTestCase):
    searcher_name = "global"


class TestGlobalTaylor(SearcherTestCase):
    searcher_name = "global"
    searcher_options = MappingProxyType({"importance": "taylor"})
