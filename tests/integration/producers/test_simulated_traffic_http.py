"""Messy simulated traffic through the real HTTP collector into the real engine."""

from __future__ import annotations

from datetime import datetime, timedelta

from funnel.funnels import FunnelCatalog
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from producers.messiness import Mess, arrivals
from producers.replay import send_http
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.reports import stage_counts
from stream_processors.embedded import EmbeddedPipeline
from tests.servers import serve_asgi

SALES = FunnelCatalog.default().get("sales")


def test_messy_traffic_over_http(store: ChdbStore) -> None:
    sim = simulate(800, seed=31, site_id="http-sim", bots=20)
    mess = Mess(duplicates=0.03, reorder_seconds=3, skewed_devices=0.2, malformed=0.02)
    stream = arrivals(sim.events, mess, seed=31)
    malformed = sum(a.kind == "malformed" for a in stream)
    duplicates = sum(a.kind == "duplicate" for a in stream)
    assert malformed
    assert duplicates

    settings = CollectorSettings(write_keys={"sim-key": "http-sim"})  # type: ignore[dict-item]
    delivery = EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default()))
    with serve_asgi(create_app(settings, delivery)) as url:
        sent = send_http(sorted(stream, key=_person_order), url, "sim-key", size=50)

    assert sent.rejected == malformed
    assert sent.accepted == len(sim.events) + duplicates
    db = store.database
    [dead] = store.query(f"SELECT count() AS n FROM {db}.rejected_events")
    assert dead["n"] == malformed
    rows = store.query(
        f"SELECT event_id, toString(occurred_at) AS at, is_bot, clock_skew_ms FROM {db}.events"
    )
    assert {r["event_id"] for r in rows} == {e.event_id for e in sim.events}
    truth = {e.event_id: e.occurred_at for e in sim.events}
    for row in rows:  # skewed clocks were corrected from sent_at (to network-delay accuracy)
        stored = datetime.fromisoformat(row["at"] + "+00:00")
        assert abs(stored - truth[row["event_id"]]) < timedelta(seconds=2), row
    assert len({r["event_id"] for r in rows if r["is_bot"]}) == 20
    assert any(abs(r["clock_skew_ms"] or 0) > 60_000 for r in rows)
    assert stage_counts(store, SALES, "http-sim") == sim.truth.step_counts("sales")


def _person_order(arrival: object) -> tuple[str, str]:
    """Each person's events in their true order (in-order delivery per person until the
    stream processors handle reordering); people interleaved by arrival time."""
    from producers.messiness import Arrival

    assert isinstance(arrival, Arrival)
    payload = arrival.payload
    return (str(payload.get("anonymous_id", "")), str(payload.get("seq", "")).zfill(6))
