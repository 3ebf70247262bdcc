"""Lead temperatures cool by time (issue 12): the status timer emits the change when a rule's
reason lapses, and an event that comes later emits the same change at the same time."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.channels import ChannelRules
from funnel.clock import to_millis
from funnel.codec import decode_state, encode_state
from funnel.events import Event
from funnel.facts import Fact, LeadChange, PersonRow
from funnel.funnels import FunnelCatalog
from funnel.processor import CoreConfig, PersonState, expire, next_deadline, process
from tests.factories import T0, fold, make_event

DAY = 86_400_000
HOUR = 3_600_000
START = to_millis(T0)
#: The shipped lead rules (cool after 30 days) and no funnels: only the leads set deadlines.
LEADS_ONLY = CoreConfig(channels=ChannelRules.default(), funnels=FunnelCatalog(specs=()))
MONEY = {"revenue": "10", "currency": "EUR"}

Change = tuple[str, str, int, str]


def run(
    events: list[Event], config: CoreConfig = LEADS_ONLY, state: PersonState | None = None
) -> tuple[PersonState, list[Fact]]:
    return fold(events, config, state)


def changes(facts: list[Fact]) -> list[Change]:
    """``(previous, temperature, ms after T0, queue)`` of each lead change."""
    return [
        (f.previous, f.temperature, to_millis(f.changed_at) - START, f.queue)
        for f in facts
        if isinstance(f, LeadChange)
    ]


def warm_by_clicks() -> list[Event]:
    return [
        make_event("lead", 0, customer_id="c1", manager_id="m1"),
        *(make_event("click", timedelta(hours=h)) for h in (1, 2, 3)),
    ]


LAPSE = 3 * HOUR + 30 * DAY + 1  # 30 days after the third click, the lead is no longer warm


def test_the_timer_cools_a_lead_warmed_by_clicks() -> None:
    state, facts = run(warm_by_clicks())
    assert changes(facts) == [("", "cold", 0, "nurture"), ("cold", "warm", 3 * HOUR, "sales")]
    assert next_deadline(state, LEADS_ONLY) == START + LAPSE
    assert expire(state, START + LAPSE - 1, LEADS_ONLY)[1] == []  # not yet

    state, out = expire(state, START + 31 * DAY, LEADS_ONLY)
    [change] = [f for f in out if isinstance(f, LeadChange)]
    assert changes(out) == [("warm", "cold", LAPSE, "nurture")]  # at the moment it lapsed
    assert (change.customer_id, change.manager_id) == ("c1", "m1")
    [row] = [f for f in out if isinstance(f, PersonRow)]
    assert row.lead_temperature == "cold"
    assert to_millis(row.updated_at) == START + LAPSE
    assert next_deadline(state, LEADS_ONLY) is None  # cold: nothing left to cool
    assert expire(state, START + 90 * DAY, LEADS_ONLY)[1] == []  # said once


def test_the_cooling_deadline_joins_the_funnel_deadlines() -> None:
    config = CoreConfig.default()
    state, _ = run(warm_by_clicks(), config)
    due = next_deadline(state, config)
    assert due is not None
    assert due < START + LAPSE  # a funnel window (30 days) ends first
    state, out = expire(state, START + 31 * DAY, config)
    assert changes(out) == [("warm", "cold", LAPSE, "nurture")]
    assert [r.lead_temperature for r in out if isinstance(r, PersonRow)] == ["cold"]


def test_a_later_event_respects_the_cooling() -> None:
    warm, _ = run(warm_by_clicks())

    def state() -> PersonState:  # a copy: the core consumes the state it is given
        return decode_state(encode_state(warm))

    later = make_event("click", timedelta(days=40))
    # Without the timer: the click finds the lead cooled, as of the moment it lapsed.
    _, out = run([later], state=state())
    assert changes(out) == [("warm", "cold", LAPSE, "nurture")]
    # With the timer first: it said so already, the click changes nothing.
    timed, _ = expire(state(), START + 31 * DAY, LEADS_ONLY)
    _, out = run([later], state=timed)
    assert changes(out) == []
    # Before the lapse, one more click keeps it warm and the deadline where it was.
    early, out = run([make_event("click", timedelta(days=20))], state=state())
    assert changes(out) == []
    assert next_deadline(early, LEADS_ONLY) == START + LAPSE


def test_an_event_older_than_the_timer_s_change_is_dated_after_it() -> None:
    """The timer ran (wall clock) before an older event arrived: the event's change comes
    after the timer's, so the latest change is still the current temperature."""
    state, _ = run(warm_by_clicks())
    state, out = expire(state, START + 40 * DAY, LEADS_ONLY)
    assert changes(out) == [("warm", "cold", LAPSE, "nurture")]
    demo = make_event("lead", timedelta(days=25), lead={"intent": "demo"})
    state, out = run([demo], state=state)
    assert changes(out) == [("cold", "warm", LAPSE + 1, "sales")]
    _, out = expire(state, START + 60 * DAY, LEADS_ONLY)
    assert changes(out) == [("warm", "cold", 55 * DAY + 1, "nurture")]


def test_qualifying_activity_moves_the_cooling() -> None:
    again = [make_event("click", timedelta(days=20, hours=h)) for h in (1, 2, 3)]
    state, out = run([*warm_by_clicks(), *again])
    assert changes(out)[-1] == ("cold", "warm", 3 * HOUR, "sales")
    assert next_deadline(state, LEADS_ONLY) == START + 20 * DAY + LAPSE


def test_a_hot_lead_whose_reason_lapsed_turns_warm_then_cold() -> None:
    events = [
        make_event("lead", 0, customer_id="c1", lead={"intent": "demo"}),  # warm
        make_event("order", timedelta(days=10), customer_id="c1", order_id="o1", **MONEY),
        make_event("lead", timedelta(days=20), customer_id="c1", lead={"intent": "demo"}),
    ]
    state, facts = run(events)
    assert changes(facts) == [("", "warm", 0, "sales"), ("warm", "hot", 10 * DAY, "priority")]
    state, out = expire(state, START + 100 * DAY, LEADS_ONLY)
    assert changes(out) == [
        ("hot", "warm", 40 * DAY + 1, "sales"),  # the order is 30 days old and unpaid
        ("warm", "cold", 50 * DAY + 1, "nurture"),  # the demo request is 30 days old
    ]
    [row] = [f for f in out if isinstance(f, PersonRow)]
    assert (row.lead_temperature, to_millis(row.updated_at)) == ("cold", START + 50 * DAY + 1)


def test_purchase_intent_lapses_and_a_new_order_renews_hot() -> None:
    state, _ = run([make_event("lead", 0, customer_id="c1", lead={"intent": "purchase"})])
    _, out = expire(state, START + 31 * DAY, LEADS_ONLY)
    assert changes(out) == [("hot", "cold", 30 * DAY + 1, "nurture")]

    orders = [
        make_event("order", 0, customer_id="c1", order_id="o1", **MONEY),
        make_event("order", timedelta(days=20), customer_id="c1", order_id="o2", **MONEY),
    ]
    state, _ = run(orders)
    assert next_deadline(state, LEADS_ONLY) == START + 50 * DAY + 1
    # Paying the newer order leaves the older one open: hot until that one lapses.
    state, out = run(
        [make_event("payment", timedelta(days=25), order_id="o2", **MONEY)], state=state
    )
    assert changes(out) == []
    assert next_deadline(state, LEADS_ONLY) == START + 30 * DAY + 1


def test_the_cooling_schedule_survives_the_state_round_trip() -> None:
    state, _ = run(warm_by_clicks())
    assert state.profile.lead.cooling
    assert decode_state(encode_state(state)) == state


KINDS = st.sampled_from(["click", "click", "lead", "purchase", "demo", "order", "payment"])


def _event(kind: str, at_ms: int, n: int) -> Event:
    if kind in ("purchase", "demo"):
        return make_event("lead", at_ms, customer_id="c", lead={"intent": kind})
    if kind == "order":
        return make_event("order", at_ms, customer_id="c", order_id=f"o{n % 3}", **MONEY)
    if kind == "payment":
        return make_event("payment", at_ms, customer_id="c", order_id=f"o{n % 3}", **MONEY)
    return make_event(kind, at_ms, customer_id="c")


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(KINDS, st.integers(0, 20 * DAY), st.booleans(), st.integers(0, 20 * DAY)),
        min_size=1,
        max_size=14,
    )
)
def test_the_changes_do_not_depend_on_when_the_timer_ran(
    steps: list[tuple[str, int, bool, int]],
) -> None:
    """Timers between events (never past the next event) change no lead change: same
    temperatures, same times, same routing."""
    at, events, timers = 0, [], []
    for n, (kind, gap, tick, before) in enumerate(steps):
        timers.append(at + min(before, gap) if tick else None)  # a tick before this event
        at += gap
        events.append(_event(kind, at, n))
    end = START + at + 120 * DAY

    plain, facts = run(events)
    plain, tail = expire(plain, end, LEADS_ONLY)

    state: PersonState | None = None
    ticked: list[Fact] = []
    for event, tick in zip(events, timers, strict=True):
        if state is not None and tick is not None:
            state, out = expire(state, START + tick, LEADS_ONLY)
            ticked.extend(out)
        state, out = process(state, event, LEADS_ONLY)
        ticked.extend(out)
    assert state is not None
    state, out = expire(state, end, LEADS_ONLY)
    ticked.extend(out)

    assert changes(ticked) == changes(facts + tail)
    assert state.profile.temperature == plain.profile.temperature
    assert next_deadline(state, LEADS_ONLY) is None
