"""Full-fidelity events (issue 18): each row of ``events`` gives back the event the core read,
field for field, so facts can be re-derived from the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from funnel.events import Event
from funnel.intake import take_batch
from funnel.processor import CoreConfig
from producers.messiness import Mess, arrivals
from producers.simulator import simulate
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline

AT = datetime(2026, 11, 2, 9, tzinfo=UTC)
EVERYTHING = {
    "event_id": "0b8f4a52-7f58-4a51-9d8c-3f3c8e0a1c11",
    "type": "lead",
    "site_id": "f",
    "anonymous_id": "anon-1",
    "customer_id": "cust-1",
    "occurred_at": "2026-11-02T09:00:00.123Z",
    "sent_at": "2026-11-02T09:00:01.5Z",
    "seq": 7,
    "context": {
        "url": "https://shop.example/pricing?utm_source=google&gclid=abc",
        "referrer": "https://www.google.com/search?q=shoes",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "winter",
        "utm_term": "shoes",
        "utm_content": "ad-2",
        "gclid": "abc",
        "fbclid": "fb-9",
    },
    "lead": {"form": "demo", "intent": "purchase"},
    "manager_id": "m-3",
    "properties": {"plan": "pro", "seats": 12, "trial": True, "score": 0.75, "note": None},
}
AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"


def test_every_row_gives_back_the_event_the_core_read(store: ChdbStore) -> None:
    sim = simulate(400, seed=3, site_id="f", multi_device=0.3)
    mess = Mess(duplicates=0.05, reorder_seconds=20, skewed_devices=0.2, late=0.02, malformed=0.01)
    stream = [(json.loads(json.dumps(EVERYTHING)), AT, AGENT)]
    stream += [(a.payload, a.arrives_at, a.user_agent) for a in arrivals(sim.events, mess, seed=3)]
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    read: dict[str, Event] = {}
    for payload, arrives_at, agent in stream:
        accepted = take_batch(
            [payload], site_id="f", received_at=arrives_at, user_agent=agent, ip="203.0.113.9"
        ).accepted
        pipeline.submit_all(accepted)
        for event in accepted:
            read.setdefault(event.event_id, event)  # a retry's copy is a duplicate
    pipeline.flush()
    rows = store.query(
        f"SELECT event_id, raw, referrer, user_agent, click_ids, lead_form "
        f"FROM {store.database}.events"
    )
    assert len(rows) == len(read) > 500
    skewed = 0
    for row in rows:
        rebuilt = Event.model_validate_json(str(row["raw"]))
        original = read[str(row["event_id"])]
        assert rebuilt.model_dump() == original.model_dump(), row["event_id"]
        skewed += original.context.clock_skew_ms is not None and original.context.clock_skew_ms != 0
    assert skewed > 0, "clock corrections must be among the events to be a test"
    (everything,) = [r for r in rows if r["event_id"] == EVERYTHING["event_id"]]
    assert everything["referrer"] == "https://www.google.com/search?q=shoes"
    assert everything["user_agent"] == AGENT
    assert dict(everything["click_ids"]) == {"gclid": "abc", "fbclid": "fb-9"}
    assert everything["lead_form"] == "demo"
    rebuilt = Event.model_validate_json(str(everything["raw"]))
    assert rebuilt.properties == {
        "plan": "pro",
        "seats": 12,
        "trial": True,
        "score": 0.75,
        "note": None,
    }
    assert rebuilt.sent_at is not None
