"""The per-person transition: facts out of events."""

from datetime import timedelta

import pytest

from funnel.codec import decode_state, encode_state
from funnel.events import EventType
from funnel.facts import EventRow, StageReached
from funnel.processor import CoreConfig, PersonState, process
from tests.factories import fold, make_event

CONFIG = CoreConfig.default()


def run(events: list) -> tuple[PersonState, list]:  # type: ignore[type-arg]
    return fold(events, CONFIG)


def test_stage_facts_carry_times_and_last_touch() -> None:
    events = [
        make_event("impression", 0, context={"utm_medium": "email", "utm_campaign": "w1"}),
        make_event("click", timedelta(minutes=5), context={"gclid": "g", "utm_campaign": "b"}),
        make_event("lead", timedelta(hours=2), customer_id="c1"),
    ]
    state, facts = run(events)
    stages = [f for f in facts if isinstance(f, StageReached) and f.funnel == "sales"]
    assert [(s.step, s.step_index, s.channel, s.campaign) for s in stages] == [
        ("impression", 1, "Email", "w1"),
        ("click", 2, "Paid Search", "b"),
        ("lead", 3, "Paid Search", "b"),
    ]
    assert all(s.entered_at == events[0].occurred_at for s in stages)
    assert stages[2].reached_at == events[2].occurred_at
    rows = [f for f in facts if isinstance(f, EventRow)]
    assert [r.channel for r in rows] == ["Email", "Paid Search", "Paid Search"]
    assert rows[2].customer_id == "c1"
    assert state.profile.funnels["sales"].level == 3


def test_repeated_steps_do_not_repeat_facts() -> None:
    events = [make_event("impression", i * 1000) for i in range(3)]
    _, facts = run(events)
    assert [f.funnel for f in facts if isinstance(f, StageReached)] == [
        "sales",
        "aida",
        "hourglass",
    ]
    assert sum(isinstance(f, EventRow) for f in facts) == 3


def test_state_round_trips_through_json() -> None:
    state, _ = run(
        [
            make_event(EventType.IMPRESSION, 0, context={"fbclid": "f"}),
            make_event(EventType.CLICK, 10),
        ]
    )
    assert decode_state(encode_state(state)) == state


def test_a_replayed_event_is_a_no_op() -> None:
    first = make_event("impression", 0)
    state, _ = run([first, make_event("click", 10)])
    state, again = process(state, first, CONFIG)
    assert again == []
    assert state.profile.funnels["sales"].level == 2


def test_conversions_are_credited_under_every_model() -> None:
    from decimal import Decimal

    from funnel.attribution import MODELS
    from funnel.facts import AttributionRow

    events = [
        make_event("impression", 0, context={"utm_medium": "email", "utm_campaign": "n"}),
        make_event("click", timedelta(hours=1), context={"gclid": "g"}),
        make_event("lead", timedelta(hours=2), customer_id="c1"),
        make_event(
            "order",
            timedelta(hours=3),
            customer_id="c1",
            order_id="o1",
            revenue="90",
            currency="EUR",
        ),
    ]
    _, facts = run(events)
    credits = [f for f in facts if isinstance(f, AttributionRow)]
    assert {c.conversion_type for c in credits} == {"lead", "order"}
    for conversion in {c.conversion_id for c in credits}:
        mine = [c for c in credits if c.conversion_id == conversion]
        assert {c.model for c in mine} == set(MODELS)
        for model in MODELS:
            assert sum(c.credit for c in mine if c.model == model) == pytest.approx(1.0)
    order = {
        (c.model, c.channel): c.revenue_credit for c in credits if c.conversion_type == "order"
    }
    assert order[("first_touch", "Email")] == Decimal(90)
    assert order[("last_touch", "Paid Search")] == Decimal(90)
    assert order[("linear", "Email")] == Decimal(45)


def test_lead_temperature_changes_are_emitted_with_their_queue() -> None:
    from funnel.facts import LeadChange

    events = [
        make_event("click", 0),
        make_event("lead", 10, customer_id="c1", lead={"form": "f", "intent": "info"}),
        make_event("click", 20),
        make_event("click", 30),
        make_event("order", 40, customer_id="c1", order_id="o1", revenue="5", currency="EUR"),
        make_event("payment", 50, customer_id="c1", order_id="o1", revenue="5", currency="EUR"),
    ]
    state, facts = run(events)
    changes = [(f.previous, f.temperature, f.queue) for f in facts if isinstance(f, LeadChange)]
    assert changes == [
        ("", "cold", "nurture"),
        ("cold", "warm", "sales"),  # three clicks within 7 days
        ("warm", "hot", "priority"),  # an open order
        ("hot", "warm", "sales"),  # paid: no open order any more
    ]
    assert state.profile.payments == 1


def test_a_payment_for_a_new_order_is_a_repeat() -> None:
    money = {"revenue": "10", "currency": "EUR", "customer_id": "c"}
    events = [
        make_event("impression", 0),
        make_event("click", 1),
        make_event("lead", 2, customer_id="c"),
        make_event("order", 3, order_id="o1", **money),
        make_event("payment", 4, order_id="o1", **money),
        make_event("payment", 5, order_id="o2", **money),
    ]
    state, facts = run(events)
    stages = [f.step for f in facts if isinstance(f, StageReached) and f.funnel == "sales"]
    assert stages[-1] == "repeat"
    assert state.profile.payments == 2
    assert str(state.profile.revenue) == "20"


def test_a_late_event_that_changes_the_temperature_is_the_latest_change() -> None:
    """The current temperature is the latest lead change (``argMax(temperature,
    changed_at)``). A late event that changes the temperature from earlier on must still
    be the latest change, after every change landed before it."""
    from funnel.facts import LeadChange

    hour = timedelta(hours=1)
    events = [
        make_event("lead", 0, customer_id="c1"),
        *(make_event("click", i * hour) for i in (2, 3, 4)),  # three clicks: warm at 4 h
    ]
    late = make_event("lead", hour, customer_id="c1", lead={"intent": "purchase"})  # hot at 1 h
    state, facts = run(events)
    state, out = process(state, late, CONFIG)
    changes = [f for f in [*facts, *out] if isinstance(f, LeadChange)]
    latest = max(changes, key=lambda c: c.changed_at)
    assert state.profile.temperature == "hot"
    assert latest.temperature == state.profile.temperature
    in_order, _ = run([events[0], late, *events[1:]])
    assert in_order.profile.temperature == "hot"
