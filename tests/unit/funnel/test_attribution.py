"""Rule-based attribution: hand-computed cases, and credits that always sum to one."""

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.attribution import MODELS, AttributionSettings, PathTouch, attribute, split_revenue

DAY = 86_400_000
CONV = 100 * DAY


def by_model(credits: list, model: str) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    return {(c.channel, c.campaign): c.credit for c in credits if c.model == model}


def test_time_decay_halves_every_half_life() -> None:
    path = [PathTouch(CONV - 7 * DAY, "Email"), PathTouch(CONV, "Paid Search")]
    credits = by_model(attribute(path, CONV, Decimal(90)), "time_decay")
    assert credits[("Email", "")] == pytest.approx(1 / 3)
    assert credits[("Paid Search", "")] == pytest.approx(2 / 3)


def test_time_decay_half_life_is_configurable() -> None:
    path = [PathTouch(CONV - 1 * DAY, "Email"), PathTouch(CONV, "Display")]
    credits = by_model(
        attribute(
            path, CONV, Decimal(1), settings=AttributionSettings(half_life=timedelta(days=1))
        ),
        "time_decay",
    )
    assert credits[("Email", "")] == pytest.approx(1 / 3)


def test_position_based() -> None:
    path = [PathTouch(CONV - (4 - i) * DAY, c) for i, c in enumerate(["A", "B", "C", "D"])]
    credits = by_model(attribute(path, CONV, Decimal(0)), "position_based")
    assert credits == pytest.approx(
        {("A", ""): 0.4, ("B", ""): 0.1, ("C", ""): 0.1, ("D", ""): 0.4}
    )
    two = by_model(attribute(path[:2], CONV, Decimal(0)), "position_based")
    assert two == pytest.approx({("A", ""): 0.5, ("B", ""): 0.5})
    one = by_model(attribute(path[:1], CONV, Decimal(0)), "position_based")
    assert one == {("A", ""): 1.0}


def test_w_shaped_credits_first_lead_and_order_touches() -> None:
    names = ["first", "b", "lead-maker", "d", "order-maker", "f"]
    path = [PathTouch(CONV - (10 - i) * DAY, n) for i, n in enumerate(names)]
    credits = by_model(
        attribute(
            path,
            CONV,
            Decimal(100),
            lead_at_ms=CONV - 15 * DAY // 2,
            order_at_ms=CONV - 11 * DAY // 2,
        ),
        "w_shaped",
    )
    assert credits == pytest.approx(
        {
            ("first", ""): 0.3,
            ("lead-maker", ""): 0.3,
            ("order-maker", ""): 0.3,
            ("b", ""): 0.1 / 3,
            ("d", ""): 0.1 / 3,
            ("f", ""): 0.1 / 3,
        }
    )


def test_w_shaped_falls_back_to_position_based_without_milestones() -> None:
    path = [PathTouch(CONV - (3 - i) * DAY, c) for i, c in enumerate(["A", "B", "C"])]
    got = attribute(path, CONV, Decimal(0), lead_at_ms=CONV - DAY)  # no order milestone
    assert by_model(got, "w_shaped") == by_model(got, "position_based")


def test_first_last_and_last_non_direct() -> None:
    path = [PathTouch(1, "Email", "nov"), PathTouch(2, "Paid Search"), PathTouch(3, "Direct")]
    credits = attribute(path, 10, Decimal(50))
    assert by_model(credits, "first_touch") == {("Email", "nov"): 1.0}
    assert by_model(credits, "last_touch") == {("Direct", ""): 1.0}
    assert by_model(credits, "last_non_direct") == {("Paid Search", ""): 1.0}
    only_direct = attribute([PathTouch(1, "Direct")], 10, Decimal(1))
    assert by_model(only_direct, "last_non_direct") == {("Direct", ""): 1.0}


def test_no_touches_credits_direct_and_lookback_applies() -> None:
    stale = [PathTouch(CONV - 31 * DAY, "Email")]
    credits = attribute(stale, CONV, Decimal("12.34"))
    assert {(c.model, c.channel, c.credit, c.revenue_credit) for c in credits} == {
        (m, "Direct", 1.0, Decimal("12.34")) for m in MODELS
    }


def test_same_channel_and_campaign_are_one_credit() -> None:
    path = [PathTouch(1, "Email", "a"), PathTouch(2, "Email", "a"), PathTouch(3, "Email", "b")]
    assert by_model(attribute(path, 10, Decimal(0)), "linear") == pytest.approx(
        {("Email", "a"): 2 / 3, ("Email", "b"): 1 / 3}
    )


def test_revenue_split_adds_up_exactly() -> None:
    assert split_revenue(Decimal("100"), [1 / 3, 1 / 3, 1 / 3]) == [
        Decimal("33.3334"),
        Decimal("33.3333"),
        Decimal("33.3333"),
    ]


touches = st.lists(
    st.tuples(
        st.integers(0, 60 * DAY),
        st.sampled_from(["Direct", "Email", "Paid Search", "Display"]),
        st.sampled_from(["", "a", "b"]),
    ),
    max_size=30,
).map(lambda ts: [PathTouch(at, ch, cp) for at, ch, cp in sorted(ts)])


@settings(max_examples=500, deadline=None)
@given(
    path=touches,
    revenue=st.decimals(min_value=0, max_value=10**9, places=4),
    lead=st.none() | st.integers(0, 60 * DAY),
    order=st.none() | st.integers(0, 60 * DAY),
)
def test_credits_sum_to_one_per_model(
    path: list[PathTouch], revenue: Decimal, lead: int | None, order: int | None
) -> None:
    credits = attribute(path, 60 * DAY, revenue, lead_at_ms=lead, order_at_ms=order)
    for model in MODELS:
        mine = [c for c in credits if c.model == model]
        assert abs(sum(c.credit for c in mine) - 1.0) <= 1e-9
        assert sum(c.revenue_credit for c in mine) == revenue
        assert all(c.credit > 0 for c in mine)
        assert len({(c.channel, c.campaign) for c in mine}) == len(mine)
