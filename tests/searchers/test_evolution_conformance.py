"""``darwin`` and ``tyr`` pass the shared conformance suite, optimality claim included.

On the suite's separable problems (5 groups, 8 levels) both come within 1% of the exact
optimum in at most 37 evaluations (seeds 0-9, three budgets); 60 leaves a margin. The
harder claim, on 12 groups and 16 levels, is in ``test_darwin.py`` and ``test_tyr.py``.
"""

from __future__ import annotations

from autoprune.testing.searcher_suite import SearcherTestCase


class TestDarwin(SearcherTestCase):
    searcher_name = "darwin"
    optimality_tolerance = 0.01
    optimality_proposals = 60


class TestTyr(SearcherTestCase):
    searcher_name = "tyr"
    optimality_tolerance = 0.01
    optimality_proposals = 60
