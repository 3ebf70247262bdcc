"""Funnel status (DESIGN §6): in_window → converted or dropped, the latter by the timer."""

from __future__ import annotations

from datetime import timedelta

from funnel.clock import to_millis
from funnel.facts import PersonRow
from funnel.processor import CoreConfig, expire, next_deadline, process
from funnel.progression import FunnelProgress, advance, deadline, status
from tests.factories import T0, make_event
from tests.unit.funnel.test_processor import run

CONFIG = CoreConfig.default()
DAY = 86_400_000
WINDOW = 30 * DAY


def rows(facts: list[object]) -> list[PersonRow]:
    return [f for f in facts if isinstance(f, PersonRow)]


def test_status_follows_the_newest_chain_and_the_window() -> None:
    progress = FunnelProgress.empty(3)
    assert deadline(progress, 3, WINDOW) is None  # never entered
    advance(progress, 0, [0], WINDOW)
    advance(progress, 10 * DAY, [0], WINDOW)  # a newer step-1 event: a later deadline
    assert deadline(progress, 3, WINDOW) == 10 * DAY + WINDOW
    assert status(progress, 3, WINDOW, 10 * DAY + WINDOW) == "in_window"
    assert status(progress, 3, WINDOW, 10 * DAY + WINDOW + 1) == "dropped"
    advance(progress, 11 * DAY, [1], WINDOW)
    advance(progress, 12 * DAY, [2], WINDOW)
    assert status(progress, 3, WINDOW, 99 * DAY) == "converted"
    assert deadline(progress, 3, WINDOW) is None


def test_a_stopped_strict_scan_is_dropped_at_once() -> None:
    progress = FunnelProgress.empty(3)
    advance(progress, 0, [0], WINDOW, "strict")
    advance(progress, 1, [], WINDOW, "strict")  # another event in between: the scan stops
    assert status(progress, 3, WINDOW, 2) == "dropped"


def test_rows_carry_status_and_the_timer_drops_expired_windows() -> None:
    state, facts = run([make_event("impression", 0), make_event("click", timedelta(hours=1))])
    last = rows(facts)[-1]
    assert last.funnel_status["sales"] == "in_window"
    start = to_millis(T0)
    assert next_deadline(state, CONFIG) == start + WINDOW + 1

    _, nothing = expire(state, start + WINDOW, CONFIG)  # not yet
    assert nothing == []
    state, out = expire(state, start + WINDOW + 1, CONFIG)
    [dropped] = rows(out)
    assert dropped.funnel_status["sales"] == "dropped"
    assert to_millis(dropped.updated_at) == start + WINDOW  # versioned at the deadline
    assert dropped.updated_at > last.updated_at
    # Other funnels' windows opened with the click, an hour later: they drop then.
    assert next_deadline(state, CONFIG) == start + WINDOW + 3_600_000 + 1
    state, later = expire(state, start + 95 * DAY, CONFIG)  # hourglass: 90 days
    assert set(rows(later)[0].funnel_status.values()) == {"dropped"}
    assert next_deadline(state, CONFIG) is None
    assert expire(state, start + 96 * DAY, CONFIG)[1] == []  # said once


def test_a_late_event_after_the_timer_gets_a_later_version() -> None:
    state, _ = run([make_event("impression", 0)])
    state, out = expire(state, to_millis(T0) + 40 * DAY, CONFIG)
    [dropped] = rows(out)
    # Late (but within the lateness bound of the person's newest event): a click that
    # extends the chain in time. The new row must win over the timer's.
    state, facts = process(state, make_event("click", timedelta(hours=2)), CONFIG)
    [again] = rows(facts)
    assert again.updated_at > dropped.updated_at


def test_regular_customers_have_three_payments() -> None:
    events = [make_event("impression", 0)]
    for n in range(3):
        at = timedelta(days=n + 1)
        events.append(make_event("payment", at, order_id=f"o{n}", revenue="10", currency="EUR"))
    _, facts = run(events)
    assert [r.regular for r in rows(facts)] == [False, False, False, True]
