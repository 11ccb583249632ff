"""``emo`` passes the shared conformance suite, with two and with three objectives."""

from __future__ import annotations

from types import MappingProxyType

from autoprune.testing.searcher_suite import SearcherTestCase


class TestEmo(SearcherTestCase):
    searcher_name = "emo"
    max_proposals = 48  # two generations and a half of the default 20, so tells cross populations


class TestEmoThreeObjectives(SearcherTestCase):
    searcher_name = "emo"
    searcher_options = MappingProxyType({"objectives": ["error", "flops", "params"], "pop_size": 12,
                                         "crossover": "ux"})
    max_proposals = 30


class TestEmoTrainingAware(SearcherTestCase):
    searcher_name = "emo"
    searcher_options = MappingProxyType({"fidelities": [5, 20], "pop_size": 8})
    max_proposals = 40
