"""The paths report against hand-computed journeys (issue 17): channel paths converting and
not, path length, time lag and assists, from events stored through the real pipeline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from funnel.events import Event, EventType
from funnel.processor import CoreConfig
from storage.backends import ChdbStore
from storage.reports import ReportScope
from storage.reports.paths import paths_report
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import make_event

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
SEARCH = {"utm_source": "google", "utm_medium": "cpc"}
EMAIL = {"utm_source": "newsletter", "utm_medium": "email"}


def touch(kind: EventType, at: timedelta, person: str, context: dict[str, str]) -> Event:
    return make_event(kind, at, person=person, site="j", context=context)


def pay(at: timedelta, person: str) -> Event:
    return make_event(
        EventType.PAYMENT,
        at,
        person=person,
        site="j",
        customer_id=f"cust-{person}",
        order_id=f"o-{person}",
        revenue="10",
        currency="EUR",
    )


@pytest.fixture
def journeys(store: ChdbStore) -> ChdbStore:
    """Five people:

    * ``p1``: Paid Search, Email, Paid Search, then pays 3 days after the first touch;
    * ``p2``: an Email click, pays 12 hours later;
    * ``p3``: a Paid Search impression, never pays;
    * ``p4``: pays without any touch (Direct);
    * ``p5``: two Email clicks in a row, never pays.
    """
    events = [
        touch(EventType.IMPRESSION, timedelta(0), "p1", SEARCH),
        touch(EventType.CLICK, DAY, "p1", EMAIL),
        touch(EventType.CLICK, 2 * DAY, "p1", SEARCH),
        pay(3 * DAY, "p1"),
        touch(EventType.CLICK, timedelta(0), "p2", EMAIL),
        pay(12 * HOUR, "p2"),
        touch(EventType.IMPRESSION, timedelta(0), "p3", SEARCH),
        pay(DAY, "p4"),
        touch(EventType.CLICK, timedelta(0), "p5", EMAIL),
        touch(EventType.CLICK, HOUR, "p5", EMAIL),
    ]
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    pipeline.submit_all(events)
    pipeline.flush()
    return store


def rows(store: ChdbStore, show: str) -> list[tuple[object, ...]]:
    return list(paths_report(store, ReportScope(site="j"), show=show).rows)


def test_channel_paths_converting_and_not(journeys: ChdbStore) -> None:
    assert rows(journeys, "paths") == [
        ("Email", 1, 1, 1, 0.5),
        ("Direct", 1, 1, 0, 1.0),
        ("Paid Search > Email > Paid Search", 3, 1, 0, 1.0),
        ("Paid Search", 1, 0, 1, 0.0),
    ]


def test_path_length_and_time_lag(journeys: ChdbStore) -> None:
    third = round(1 / 3, 4)
    assert rows(journeys, "length") == [("0", 1, third), ("1", 1, third), ("3", 1, third)]
    assert rows(journeys, "lag") == [("<1", 1, 0.5), ("3-6", 1, 0.5)]


def test_assisted_conversions_per_channel(journeys: ChdbStore) -> None:
    assert rows(journeys, "assists") == [
        ("Email", 1, 1, 1.0),
        ("Paid Search", 1, 1, 1.0),
        ("Direct", 1, 0, 0.0),
    ]


def test_top_keeps_the_best_of_each_kind(journeys: ChdbStore) -> None:
    table = paths_report(journeys, ReportScope(site="j"), top=1)
    # the top converting path (a tie of three: the first by name) and the top
    # non-converting one (a tie of two: the first by name)
    assert [row[0] for row in table.rows] == ["Email", "Direct"]
