"""The collector's records on the events topic: one per request and person key (DESIGN §4),
and how a request waits for their acknowledgement."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest
from kafka.errors import KafkaError

from funnel.events import Event, parse_event
from producers.collector.delivery import RECORD_BYTES, KafkaDelivery, Unavailable, event_records


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


class _Producer:
    """A producer that settles its records when told to, or never (a broker that neither
    acknowledges nor fails)."""

    def __init__(self, outcome: BaseException | str | None) -> None:
        self.outcome = outcome

    def send_all(self, records: list[tuple[bytes, bytes]], done: Any, *, topic: str) -> int:
        if self.outcome != "never":
            threading.Thread(target=done, args=(self.outcome,)).start()  # the I/O thread
        return len(records)


def delivery_with(producer: _Producer, ack_timeout_s: float) -> KafkaDelivery:
    delivery = KafkaDelivery.__new__(KafkaDelivery)  # no broker: only the waiting is tested
    delivery.events_topic, delivery.rejected_topic = "e", "r"
    delivery.ack_timeout_s = ack_timeout_s
    delivery._producer = producer  # type: ignore[assignment]
    return delivery


def test_a_request_waits_for_its_acknowledgement_and_fails_with_its_error() -> None:
    asyncio.run(delivery_with(_Producer(None), 5)._send("e", [(b"k", b"v")]))
    with pytest.raises(Unavailable, match="did not acknowledge: KafkaError: broken"):
        asyncio.run(delivery_with(_Producer(KafkaError("broken")), 5)._send("e", [(b"k", b"v")]))


def test_a_request_whose_records_never_settle_fails_after_the_bound() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match="in time"):
        asyncio.run(delivery_with(_Producer("never"), 0.05)._send("e", [(b"k", b"v")]))
    assert time.monotonic() - started >= 1.05  # ack_timeout_s + 1
