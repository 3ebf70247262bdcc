"""Markov removal effect and Shapley shares against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel.datadriven import Journey, markov_shares, shapley_shares

# start→A (2), start→B (1); A→B (1), A→null (1); B→conversion (2).
# P(conv) = 2/3·1/2 + 1/3 = 2/3. Without A: 1/3 (effect 1/2); without B: 0 (effect 1).
PATHS = [Journey(("A", "B"), True), Journey(("A",), False), Journey(("B",), True)]


def test_markov_removal_effects_by_hand() -> None:
    shares = markov_shares(PATHS)
    assert shares == pytest.approx({"A": 1 / 3, "B": 2 / 3}, abs=1e-9)


def test_markov_collapses_repeats_and_ignores_non_converting_only_channels() -> None:
    shares = markov_shares([Journey(("A", "A", "A"), True), Journey(("C",), False)])
    assert shares == pytest.approx({"A": 1.0, "C": 0.0}, abs=1e-9)


def test_shapley_by_hand() -> None:
    # v({A}) = 0, v({B}) = 1, v({A,B}) = 2 (the journey A,B and the journey B converted).
    # φA = ½(0 - 0) + ½(2 - 1) = ½;  φB = ½(1 - 0) + ½(2 - 0) = 3/2; shares ÷ 2.
    shares = shapley_shares(PATHS)
    assert shares == pytest.approx({"A": 0.25, "B": 0.75}, abs=1e-9)


def test_shapley_closed_form_equals_the_subset_enumeration() -> None:
    paths = [
        Journey(("A", "B", "C"), True),
        Journey(("A",), True),
        Journey(("B", "C"), True),
        Journey(("C",), False),
    ]
    players = ["A", "B", "C"]

    def worth(coalition: set[str]) -> int:
        return sum(j.converted for j in paths if set(j.channels) <= coalition)

    expected = {}
    for p in players:
        others = [o for o in players if o != p]
        value = 0.0
        for size in range(3):
            for members in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(2 - size) / math.factorial(3)
                value += weight * (worth({*members, p}) - worth(set(members)))
        expected[p] = value / worth(set(players))
    assert shapley_shares(paths) == pytest.approx(expected, abs=1e-9)


def test_nothing_converted_gives_no_shares() -> None:
    assert markov_shares([Journey(("A",), False)]) == {}
    assert shapley_shares([Journey(("A",), False)]) == {}


journeys = st.lists(
    st.builds(
        Journey,
        st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=5).map(tuple),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@given(journeys)
def test_shares_sum_to_one(paths: list[Journey]) -> None:
    for shares in (markov_shares(paths), shapley_shares(paths)):
        if any(j.converted for j in paths):
            assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
        else:
            assert shares == {}
