"""Out-of-order arrival: the same final state, and corrections that net to the in-order facts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.events import Event
from funnel.facts import AttributionRow, EventRow, Fact, StageReached
from funnel.processor import CoreConfig, PersonState, process
from tests.factories import fold, make_event

CONFIG = CoreConfig.default()
KINDS = ["impression", "click", "lead", "order", "payment", "repeat"]
CONTEXTS = [{}, {"utm_medium": "email"}, {"gclid": "g"}, {"referrer": "https://t.co/x"}]


def feed(events: list[Event]) -> tuple[PersonState, list[Fact]]:
    return fold(events, CONFIG)


def net(facts: list[Fact]) -> tuple[Counter[object], dict[object, float], set[str]]:
    """Stage rows netted by sign, credits netted per key, and the event rows."""
    stages: Counter[object] = Counter()
    credits: dict[object, float] = {}
    for f in facts:
        if isinstance(f, StageReached):
            stages[(f.funnel, f.step_index, f.reached_at, f.entered_at, f.channel)] += f.sign
        elif isinstance(f, AttributionRow):
            key = (f.conversion_id, f.model, f.channel, f.campaign)
            credits[key] = credits.get(key, 0.0) + f.credit
    events = {f.event_id for f in facts if isinstance(f, EventRow)}
    return (
        +stages,
        {k: round(v, 9) for k, v in credits.items() if abs(v) > 1e-12},
        events,
    )


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 14))
    times = draw(st.lists(st.integers(0, 40 * 24), min_size=n, max_size=n, unique=True))
    events = []
    for seq, hours in enumerate(sorted(times)):
        kind = draw(st.sampled_from(KINDS))
        money = (
            {"order_id": f"o{draw(st.integers(0, 2))}", "revenue": "10", "currency": "EUR"}
            if kind in ("order", "payment", "repeat")
            else {}
        )
        events.append(
            make_event(
                kind,
                timedelta(hours=hours),
                seq=seq,
                context=draw(st.sampled_from(CONTEXTS)),
                **money,
            )
        )
    return events


@settings(max_examples=300, deadline=None)
@given(history=histories(), seed=st.integers(0, 2**32))
def test_any_arrival_order_gives_the_same_state_and_net_facts(
    history: list[Event], seed: int
) -> None:
    in_order_state, in_order_facts = feed(history)
    shuffled = history[:]
    random.Random(seed).shuffle(shuffled)
    state, facts = feed(shuffled)
    assert state.profile == in_order_state.profile
    assert net(facts) == net(in_order_facts)


def test_a_late_click_moves_the_stage_and_the_credit() -> None:
    impression = make_event("impression", 0, seq=0, context={"utm_medium": "email"})
    click = make_event("click", timedelta(hours=1), seq=1, context={"gclid": "g"})
    lead = make_event("lead", timedelta(hours=2), seq=2, customer_id="c")
    state, _ = feed([impression, lead])
    state, facts = process(state, click, CONFIG)
    assert state.outcome == "reordered"
    stages = [(f.funnel, f.step, f.sign) for f in facts if isinstance(f, StageReached)]
    assert ("sales", "click", 1) in stages
    assert ("sales", "lead", 1) in stages  # the lead is now step 3 of the chain
    credits = [(f.model, f.channel, f.credit) for f in facts if isinstance(f, AttributionRow)]
    assert ("last_touch", "Email", -1.0) in credits
    assert ("last_touch", "Paid Search", 1.0) in credits
    assert state.profile.funnels["sales"].level == 3


def test_events_beyond_the_lateness_bound_are_marked_late() -> None:
    first = make_event("impression", 0, seq=0)
    later = make_event("click", timedelta(days=3), seq=1)
    state, _ = feed([later])
    state, facts = process(state, first, CONFIG)
    assert state.outcome == "late"
    assert facts  # still applied: the correction path, not the floor
    assert state.profile.first_seen_ms < state.profile.last_seen_ms
    assert sum(f.revenue_credit for f in facts if isinstance(f, AttributionRow)) == Decimal(0)
