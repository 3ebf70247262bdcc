"""The collector's records on the events topic: one per request and person key (DESIGN §4)."""

from __future__ import annotations

import json
import uuid

from funnel.events import Event, parse_event
from producers.collector.delivery import RECORD_BYTES, event_records


def event(device: str, **extra: object) -> Event:
    return parse_event(
        {
            "event_id": str(uuid.uuid4()),
            "type": "impression",
            "site_id": "s",
            "anonymous_id": device,
            "occurred_at": "2026-10-01T10:00:00Z",
            **extra,
        }
    )


def test_a_keys_events_go_as_one_array_in_order_and_a_lone_event_as_an_object() -> None:
    events = [event("a"), event("b"), event("a"), event("a")]
    records = event_records(events)
    assert [key for key, _ in records] == [b"s:a", b"s:b"]
    first, second = (json.loads(value) for _, value in records)
    assert [e["event_id"] for e in first] == [events[i].event_id for i in (0, 2, 3)]
    assert second["event_id"] == events[1].event_id
    assert first[0] == json.loads(events[0].model_dump_json(exclude_none=True))


def test_a_group_over_the_record_bound_goes_as_several_records_in_order() -> None:
    big = {f"p{i}": "x" * 3_000 for i in range(40)}  # ~120 kB per event
    events = [event("a", properties=big) for _ in range(10)]
    records = event_records(events)
    assert len(records) > 1
    assert all(len(value) <= RECORD_BYTES for _, value in records)
    ids = [
        e["event_id"]
        for _, value in records
        for e in (lambda v: v if isinstance(v, list) else [v])(json.loads(value))
    ]
    assert ids == [e.event_id for e in events]
