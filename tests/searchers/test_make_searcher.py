"""The searcher registry: known names build, unknown names and options are user errors."""

from __future__ import annotations

import pytest

from autoprune.errors import UserError
from autoprune.searchers import SEARCHERS, make_searcher
from autoprune.testing.searcher_suite import build_case


def test_registry_holds_the_built_in_searchers() -> None:
    assert {"uniform", "random"} <= set(SEARCHERS)
    problem = build_case("separable-flops0.4").problem
    for name in SEARCHERS:
        assert make_searcher(name, problem=problem, seed=0).name == name


def test_unknown_name_is_a_user_error_listing_the_known_ones() -> None:
    problem = build_case("separable-flops0.4").problem
    with pytest.raises(UserError) as info:
        make_searcher("simulated-annealing", problem=problem, seed=0)
    message = str(info.value)
    assert "simulated-annealing" in message
    for name in SEARCHERS:
        assert name in message


def test_unknown_option_is_a_user_error() -> None:
    problem = build_case("separable-flops0.4").problem
    with pytest.raises(UserError, match="options"):
        make_searcher("uniform", problem=problem, seed=0, options={"population": 8})
