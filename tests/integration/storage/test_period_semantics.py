"""Periods (DESIGN §6), as a property: for random histories, random periods and day, week and
month buckets, a period's funnel never grows from one step to the next, and each person's
level in each bucket equals the deepest of their chains that enter the funnel there.

The oracle is the core's own progression (:func:`funnel.progression.advance`, itself held
equal to ClickHouse ``windowFunnel`` by ``test_window_funnel_oracle``), run in Python once per
bucket with step 1 allowed only for the bucket's entries; the report runs in the engine.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnel.clock import to_millis
from funnel.events import Event, EventType
from funnel.funnels import FunnelMode, FunnelSpec, Step
from funnel.processor import CoreConfig
from funnel.progression import FunnelProgress, advance
from storage.backends import ChdbStore
from storage.migrate import migrate
from storage.reports import ReportScope, step_counts
from storage.reports.funnels import period_levels
from stream_processors.embedded import EmbeddedPipeline

T0 = datetime(2026, 9, 28, tzinfo=UTC)  # a Monday
KINDS = [EventType.IMPRESSION, EventType.CLICK, EventType.LEAD, EventType.ORDER]


def spec(mode: FunnelMode, window_days: int) -> FunnelSpec:
    return FunnelSpec(
        name="p",
        steps=tuple(Step(name=k.value, type=k) for k in KINDS),
        window=timedelta(days=window_days),
        mode=mode,
    )


@pytest.fixture(scope="module")
def engine(chdb_engine: ChdbStore) -> ChdbStore:
    store = chdb_engine.using(f"periods_{uuid.uuid4().hex[:8]}")
    migrate(store)
    return store


@st.composite
def history(draw: st.DrawFn) -> list[tuple[int, int]]:
    """One person's events, (step kind, minutes after T0), at distinct times: a few journeys
    down the funnel (each as deep as drawn, steps hours to days apart) and some noise."""
    events: dict[int, int] = {}
    for _ in range(draw(st.integers(2, 4))):
        at = draw(st.integers(0, 60 * 24 * 60))
        for kind in range(draw(st.integers(1, 4))):
            events.setdefault(at, kind)
            at += draw(st.integers(1, 5 * 24 * 60))
    for _ in range(draw(st.integers(0, 3))):
        events.setdefault(draw(st.integers(0, 80 * 24 * 60)), draw(st.integers(0, 3)))
    return [(kind, at) for at, kind in events.items()]


histories = st.lists(history(), min_size=3, max_size=8)


def bucket(at: datetime, by: str | None) -> str:
    day = at.date()
    if by == "day":
        return day.isoformat()
    if by == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    if by == "month":
        return date(day.year, day.month, 1).isoformat()
    return ""


def oracle(
    people: dict[str, list[tuple[int, datetime]]],
    funnel: FunnelSpec,
    start: datetime,
    end: datetime,
    by: str | None,
) -> dict[tuple[str, str], int]:
    """(person, bucket) → level, by the core's progression, per the semantics of DESIGN §6."""
    out = {}
    n, window = len(funnel.steps), funnel.window_ms
    for person, events in people.items():
        events = sorted(events, key=lambda e: e[1])
        if funnel.mode is FunnelMode.ANY:
            progress = FunnelProgress.empty(n)
            for kind, at in events:
                advance(progress, to_millis(at), [kind], window, "any")
            opened = events[0][1]
            if start <= opened < end:
                out[(person, bucket(opened, by))] = progress.level
            continue
        entries = {bucket(at, by) for kind, at in events if kind == 0 and start <= at < end}
        for group in entries:
            progress = FunnelProgress.empty(n)
            for kind, at in events:
                if at < start:
                    continue
                entry = start <= at < end and bucket(at, by) == group
                steps = [kind] if kind != 0 or entry else []
                advance(progress, to_millis(at), steps, window, "ordered")
            out[(person, group)] = progress.level
    return {k: v for k, v in out.items() if v > 0}


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=histories,
    mode=st.sampled_from([FunnelMode.ORDERED, FunnelMode.ANY]),
    window_days=st.integers(1, 20),
    first_day=st.integers(0, 50),
    days=st.integers(3, 40),
    by=st.sampled_from([None, "day", "week", "month"]),
)
def test_period_funnels_are_the_deepest_chain_entering_each_bucket(
    engine: ChdbStore,
    raw: list[list[tuple[int, int]]],
    mode: FunnelMode,
    window_days: int,
    first_day: int,
    days: int,
    by: str | None,
) -> None:
    site = f"s{uuid.uuid4().hex[:10]}"
    people = {
        f"p{i}": [(kind, T0 + timedelta(minutes=m)) for kind, m in events]
        for i, events in enumerate(raw)
    }
    stored: list[Any] = [
        Event.model_validate(
            {
                "event_id": str(uuid.uuid4()),
                "type": KINDS[kind],
                "site_id": site,
                "anonymous_id": person,
                "occurred_at": at,
            }
        )
        for person, events in people.items()
        for kind, at in events
    ]
    pipeline = EmbeddedPipeline(engine, CoreConfig.default())
    pipeline.submit_all(sorted(stored, key=lambda e: e.order_key))
    pipeline.flush()

    funnel = spec(mode, window_days)
    start = T0 + timedelta(days=first_day)
    end = start + timedelta(days=days)
    scope = ReportScope(start=start, end=end, site=site, by=by)  # type: ignore[arg-type]

    levels = period_levels(engine, funnel, scope)
    assert {(p, g): level for (_, p, g), level in levels.items()} == oracle(
        people, funnel, start, end, by
    )
    for steps in step_counts(engine, funnel, scope).values():
        series = [steps.get(i, 0) for i in range(1, len(funnel.steps) + 1)]
        assert series == sorted(series, reverse=True)
