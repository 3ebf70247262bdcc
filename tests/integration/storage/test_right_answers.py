"""Issue 12: answers analysts read every day — periods that add up, bots kept out, the live
rate without re-sent copies. Each case failed before its fix; the store is the real engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from funnel.events import EventType
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.gate import CommitGate
from storage.reports import ReportScope, dropoff_report, funnel_report
from storage.reports.api import LiveReports
from storage.reports.channels import channels_report
from stream_processors.embedded import EmbeddedPipeline, GatedPipeline
from tests.factories import make_event
from tests.servers import READ_KEYS, read_client

CONFIG = CoreConfig.default()
SALES = CONFIG.funnels.get("sales")
OCTOBER = ReportScope(
    start=datetime(2026, 10, 1, tzinfo=UTC), end=datetime(2026, 11, 1, tzinfo=UTC), site="m"
)
NOVEMBER = ReportScope(
    start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 12, 1, tzinfo=UTC), site="m"
)


def run(store: ChdbStore, events: list[object]) -> None:
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(events)  # type: ignore[arg-type]
    pipeline.flush()


def counts(store: ChdbStore, scope: ReportScope) -> list[int]:
    (report,) = funnel_report(store, SALES, scope)
    return [step.count for step in report.steps]


def test_a_step_reached_by_a_later_chain_counts_in_the_later_period(store: ChdbStore) -> None:
    """Seen on the demo store: November showed impression 0, click 85, "lost -85"."""
    october = datetime(2026, 10, 1, 9, tzinfo=UTC)
    november = datetime(2026, 11, 3, 9, tzinfo=UTC)
    run(
        store,
        [
            make_event(EventType.IMPRESSION, october, person="p", site="m"),
            make_event(EventType.IMPRESSION, november, person="p", site="m"),
            make_event(EventType.CLICK, november + timedelta(hours=1), person="p", site="m"),
        ],
    )
    assert counts(store, OCTOBER)[:2] == [1, 0]
    assert counts(store, NOVEMBER)[:2] == [1, 1]
    by_month = {
        r.group: [s.count for s in r.steps][:2]
        for r in funnel_report(store, SALES, ReportScope(site="m", by="month"))
    }
    assert by_month == {"2026-10-01": [1, 0], "2026-11-01": [1, 1]}
    november = [row for row in dropoff_report(store, SALES, NOVEMBER) if row.step == "click"]
    assert [(r.reached, r.continued) for r in november] == [(1, 0)]


def test_a_chain_that_enters_in_october_counts_its_november_steps_in_october(
    store: ChdbStore,
) -> None:
    entered = datetime(2026, 10, 30, 9, tzinfo=UTC)
    run(
        store,
        [
            make_event(EventType.IMPRESSION, entered, person="q", site="m"),
            make_event(EventType.CLICK, entered + timedelta(days=5), person="q", site="m"),
        ],
    )
    assert counts(store, OCTOBER)[:2] == [1, 1]
    assert counts(store, NOVEMBER)[:2] == [0, 0]


def test_bots_are_left_out_unless_asked_for(store: ChdbStore) -> None:
    sim = simulate(300, seed=3, site_id="b", bots=50)
    run(store, sim.events)
    people = 300  # the simulated persons; the truth counts the five crawler devices too
    assert len(sim.truth.persons) == people + 5
    everyone = ReportScope(site="b")
    with_bots = ReportScope(site="b", include_bots=True)
    assert counts(store, everyone)[0] == people
    assert counts(store, with_bots)[0] == people + 5  # five crawler devices
    [row] = store.query(
        f"SELECT countIf(is_bot) AS bots FROM {store.database}.events WHERE site_id = 'b'"
    )
    assert row["bots"] == 50  # stored and flagged, not dropped
    [stages] = store.query(
        f"SELECT count() AS n FROM {store.database}.stage_reached WHERE person_id LIKE 'bot-%'"
    )
    assert stages["n"] == 0  # the stream derives nothing from them
    impressions = sum(r["impressions"] for r in channels_report(store, everyone).records())
    impressions_with_bots = sum(
        r["impressions"] for r in channels_report(store, with_bots).records()
    )
    assert impressions_with_bots - impressions == 50


@pytest.fixture
def client(store: ChdbStore) -> Iterator[TestClient]:
    settings = CollectorSettings(write_keys={"k": "live"}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    gate = CommitGate()
    delivery = EmbeddedDelivery(GatedPipeline(store, CONFIG, gate))
    live = LiveReports(store, CONFIG.funnels, gate)
    with read_client(create_app(settings, delivery, live=live)) as test_client:
        yield test_client


def test_the_live_rate_does_not_count_re_sent_copies(client: TestClient) -> None:
    batch = [
        {
            "event_id": str(uuid.uuid4()),
            "type": "impression",
            "anonymous_id": f"a{i}",
            "occurred_at": "2026-10-01T10:00:00Z",
        }
        for i in range(5)
    ]
    for _ in range(3):  # a client retrying the same batch
        assert client.post("/v1/batch", json=batch, headers={"X-Funnel-Key": "k"}).json() == {
            "accepted": 5,
            "rejected": [],
        }
    live = client.get("/api/live", headers={"host": "localhost"}).json()
    assert live["accepted"]["total"] == 5
    assert live["stored_events"] == 5
    metrics = client.get("/metrics").text
    assert 'funnel_collector_events_total{outcome="duplicate"} 10.0' in metrics
