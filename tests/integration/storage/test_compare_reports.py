"""``--compare previous|year`` on the funnel, drop-off and channels reports, against counts
worked out by hand (issue 17), through the catalog the command and the report API share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from funnel.events import Event, EventType
from funnel.processor import CoreConfig
from funnel.report import Table
from storage.backends import ChdbStore
from storage.reports.catalog import compute, parse_request
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import make_event

CONFIG = CoreConfig.default()
OCTOBER, NOVEMBER = datetime(2026, 10, 10, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
ADS = {"utm_source": "google", "utm_medium": "cpc"}


def touch(kind: EventType, at: datetime, person: str) -> Event:
    return make_event(kind, at, person=person, site="c", context=ADS)


@pytest.fixture
def two_months(store: ChdbStore) -> ChdbStore:
    """October: 3 impressions, 1 click. November: 4 impressions, 2 clicks, 1 lead."""
    events = [touch(EventType.IMPRESSION, OCTOBER, f"o{i}") for i in range(3)]
    events.append(touch(EventType.CLICK, OCTOBER + timedelta(hours=1), "o0"))
    events += [touch(EventType.IMPRESSION, NOVEMBER, f"n{i}") for i in range(4)]
    events += [touch(EventType.CLICK, NOVEMBER + timedelta(hours=1), f"n{i}") for i in range(2)]
    events.append(make_event(EventType.LEAD, NOVEMBER + timedelta(hours=2), person="n0", site="c"))
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(events)
    pipeline.flush()
    return store


def answer(store: ChdbStore, name: str, **params: str) -> Table:
    request = parse_request(name, {"site": "c", "from": "2026-11-01", "to": "2026-11-30", **params})
    result = compute(store, request, CONFIG.funnels)
    assert isinstance(result, Table)
    return result


def column(table: Table, name: str, period: str) -> list[object]:
    i = table.columns.index(name)
    return [row[i] for row in table.rows if row[0] == period]


def test_funnel_against_the_previous_period(two_months: ChdbStore) -> None:
    table = answer(two_months, "funnel", funnel="aida", compare="previous")
    assert column(table, "people", "current") == [4, 2, 1, 0]
    assert column(table, "people", "previous") == [3, 1, 0, 0]
    assert column(table, "people", "change") == [1, 1, 1, 0]
    assert column(table, "step_conversion", "change")[1] == pytest.approx(2 / 4 - 1 / 3, abs=1e-4)
    assert table.meta["previous"] == "2026-10-02..2026-10-31"


def test_funnel_a_year_earlier_is_all_zeros_here(two_months: ChdbStore) -> None:
    table = answer(two_months, "funnel", funnel="aida", compare="year", split="false")
    assert column(table, "people", "year_ago") == [0, 0, 0, 0]
    assert column(table, "people", "change") == [4, 2, 1, 0]


def test_dropoff_and_channels_against_the_previous_period(two_months: ChdbStore) -> None:
    dropoff = answer(two_months, "dropoff", funnel="aida", compare="previous")
    assert column(dropoff, "reached", "change") == [1, 1, 1]
    assert column(dropoff, "continued", "change") == [1, 1, 0]
    channels = answer(two_months, "channels", compare="previous")
    assert column(channels, "channel", "change") == ["Paid Search"]
    assert column(channels, "impressions", "current") == [4]
    assert column(channels, "impressions", "previous") == [3]
    assert column(channels, "clicks", "change") == [1]


def test_a_breakdown_compares_value_by_value_even_when_a_period_has_none(
    two_months: ChdbStore,
) -> None:
    table = answer(two_months, "funnel", funnel="aida", compare="year", by="utm_source")
    assert column(table, "group", "current") == ["google"] * 4
    assert column(table, "people", "year_ago") == [0, 0, 0, 0]
    assert column(table, "people", "change") == [4, 2, 1, 0]
