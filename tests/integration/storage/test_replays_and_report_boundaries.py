"""Replays and report boundaries: a refused write keeps its rows, a replayed insert counts once
in the aggregates, time between steps, journeys of a period. Each test failed before its fix.

* the embedded runner dropped a table's buffered rows when the store refused them (the
  persons' states had already seen the events, so a client's retry could not restore them);
* a replayed insert (same dedup token) was dropped by the fact table but counted again by
  the aggregates its materialized views feed;
* time-to-convert measured from 1970 for a person whose first row is above step 1 (an
  any-order funnel);
* markov/shapley took a person who first converted long before the period as converting in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from funnel.events import EventType
from funnel.processor import CoreConfig
from storage.backends import ChdbStore, StoreError
from storage.reports import ReportScope
from storage.reports.attribution import journeys
from storage.reports.timing import time_to_convert_report
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import T0, make_event

CONFIG = CoreConfig.default()
DAY = timedelta(days=1)


class RefusingOnce:
    """The real embedded store, refusing the first insert into ``table``."""

    def __init__(self, store: ChdbStore, table: str) -> None:
        self.store, self.table, self.refused = store, table, False
        self.database = store.database

    def insert(self, table: str, rows: Sequence[Mapping[str, object]], **kw: Any) -> None:
        if table == self.table and not self.refused:
            self.refused = True
            raise StoreError("refused once (a test)")
        self.store.insert(table, rows, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def count(store: ChdbStore, sql: str) -> int:
    return int(store.query(sql)[0]["n"])


def test_a_refused_write_keeps_its_rows_for_the_next(store: ChdbStore) -> None:
    flaky = RefusingOnce(store, "events")
    pipeline = EmbeddedPipeline(flaky, CONFIG)  # type: ignore[arg-type]
    events = [make_event(EventType.IMPRESSION, i, person=f"p{i}", site="r") for i in range(40)]
    pipeline.submit_all(events)
    with pytest.raises(StoreError):
        pipeline.flush()
    pipeline.submit_all(events)  # the client's retry: duplicates to the persons' states
    pipeline.flush()
    assert count(store, f"SELECT count() AS n FROM {store.database}.events") == 40
    assert count(store, f"SELECT uniqExact(event_id) AS n FROM {store.database}.events") == 40


def test_a_replayed_insert_counts_once_in_the_aggregates(store: ChdbStore) -> None:
    row = {
        "site_id": "s", "person_id": "p1", "funnel": "sales", "step": "impression",
        "step_index": 1, "reached_at": T0, "entered_at": T0, "channel": "Direct",
        "campaign": "", "entry_channel": "Direct", "entry_campaign": "", "sign": 1,
    }  # fmt: skip
    for _ in range(2):
        store.insert("stage_reached", [row], dedup_token="replayed")
    db = store.database
    assert count(store, f"SELECT sum(sign) AS n FROM {db}.stage_reached") == 1
    # (agg_stage_minute keeps 14 days: a row from T0 is past its TTL already.)
    for table in ("agg_stage_hour", "agg_stage_day"):
        assert count(store, f"SELECT sum(persons) AS n FROM {db}.{table}") == 1, table


def test_time_between_steps_only_measures_consecutive_steps(store: ChdbStore) -> None:
    spec = CONFIG.funnels.get("tofu_mofu_bofu")  # any order: click, lead, order
    events = [
        make_event(EventType.LEAD, timedelta(hours=1), person="p", site="t"),
        make_event(EventType.ORDER, timedelta(hours=3), person="p", site="t", order_id="o"),
    ]
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(events)
    pipeline.flush()
    table = time_to_convert_report(store, spec, ReportScope(site="t"))
    for row in table.records():
        assert float(row["p90_hours"]) < 24 * 365, row  # type: ignore[arg-type]


def test_a_person_who_converted_before_the_period_is_no_journey_of_it(store: ChdbStore) -> None:
    old = [
        make_event(EventType.CLICK, 0, person="early", site="j",
                   context={"utm_source": "google", "utm_medium": "cpc"}),
        make_event(EventType.PAYMENT, timedelta(hours=1), person="early", site="j",
                   customer_id="c1", order_id="o1", revenue="10", currency="USD"),
        # ...and comes back much later, inside the period, and pays again.
        make_event(EventType.CLICK, 100 * DAY, person="early", site="j", customer_id="c1"),
        make_event(EventType.PAYMENT, 100 * DAY + timedelta(hours=1), person="early",
                   site="j", customer_id="c1", order_id="o2", revenue="10", currency="USD"),
    ]  # fmt: skip
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(old)
    pipeline.flush()
    period = ReportScope(start=T0 + 90 * DAY, end=T0 + 120 * DAY, site="j")
    found = journeys(store, period)
    assert not any(j.converted for js in found.values() for j in js)
