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
