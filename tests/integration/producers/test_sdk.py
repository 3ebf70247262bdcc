"""The back-end SDK on real parts: the real collector over HTTP, and the real Kafka broker.

(a) The collector app (embedded delivery on the test's chDB store) served by uvicorn in a
thread; the SDK posts to it over TCP and the events land in the store's ``events`` table.
(b) The SDK's Kafka transport produces to a fresh topic on the session's broker; a
kafka-python consumer reads every record back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from starlette.applications import Starlette

from devtools.kafka_broker import KafkaBroker
from funnel.events import parse_event
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from producers.sdk import EventFields, FlushResult, FunnelClient, event_id_for
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline
from tests.servers import free_port, serve_asgi

KEY = "sdk-integration-key"
SITE = "shop"


def collector_app(store: ChdbStore) -> Starlette:
    settings = CollectorSettings(write_keys={KEY: SITE})
    return create_app(settings, EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default())))


@pytest.fixture
def collector_url(store: ChdbStore) -> Iterator[str]:
    with serve_asgi(collector_app(store)) as url:
        yield url


def rows(store: ChdbStore, sql: str) -> list[dict[str, object]]:
    return store.query(sql.format(db=store.database))


def test_orders_and_payments_land_in_the_events_table(collector_url: str, store: ChdbStore) -> None:
    when = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    with FunnelClient(endpoint=collector_url, write_key=KEY, site_id=SITE) as client:
        lead = client.lead(customer_id="c-1", intent="purchase", occurred_at=when)
        order = client.order(
            "ord-1",
            customer_id="c-1",
            revenue="120.50",
            currency="EUR",
            manager_id="m-7",
            occurred_at=when,
            idempotency_key="order:ord-1",
        )
        payment = client.payment(
            "ord-1",
            customer_id="c-1",
            revenue="120.50",
            currency="EUR",
            occurred_at=when,
            idempotency_key="payment:ord-1",
        )
        assert client.flush() == FlushResult(delivered=3)
    assert (order, payment) == (
        event_id_for(SITE, "order:ord-1"),
        event_id_for(SITE, "payment:ord-1"),
    )

    stored = rows(
        store,
        "SELECT event_id, event_type, customer_id, person_id, order_id, toString(revenue) AS rev,"
        " currency, manager_id, lead_intent FROM {db}.events ORDER BY event_type",
    )
    assert stored == [
        {
            "event_id": lead,
            "event_type": "lead",
            "customer_id": "c-1",
            "person_id": "c-1",
            "order_id": "",
            "rev": "0",
            "currency": "",
            "manager_id": "",
            "lead_intent": "purchase",
        },
        {
            "event_id": order,
            "event_type": "order",
            "customer_id": "c-1",
            "person_id": "c-1",
            "order_id": "ord-1",
            "rev": "120.5",
            "currency": "EUR",
            "manager_id": "m-7",
            "lead_intent": "",
        },
        {
            "event_id": payment,
            "event_type": "payment",
            "customer_id": "c-1",
            "person_id": "c-1",
            "order_id": "ord-1",
            "rev": "120.5",
            "currency": "EUR",
            "manager_id": "",
            "lead_intent": "",
        },
    ]


def test_a_business_fact_resent_after_a_crash_keeps_its_event_id(
    collector_url: str, store: ChdbStore
) -> None:
    """The back end pays, crashes before recording that it told us, and tells us again.

    The re-sent payment has the same id (its idempotency key), so the pipeline, which drops an
    ``event_id`` it already applied, stores it once, like every other event.
    """
    fact: EventFields = {
        "customer_id": "c-2",
        "revenue": "40",
        "currency": "USD",
        "idempotency_key": "payment:ord-2",
    }
    with FunnelClient(endpoint=collector_url, write_key=KEY, site_id=SITE) as before_crash:
        first = before_crash.payment("ord-2", **fact)
        clicks = [before_crash.track("click", anonymous_id=f"a-{n}") for n in range(5)]
    with FunnelClient(endpoint=collector_url, write_key=KEY, site_id=SITE) as after_restart:
        again = after_restart.payment("ord-2", **fact)
    assert first == again

    counts = {
        str(r["event_id"]): r["n"]
        for r in rows(store, "SELECT event_id, count() AS n FROM {db}.events GROUP BY event_id")
    }
    assert counts == dict.fromkeys([first, *clicks], 1)


def test_a_collector_that_cannot_store_keeps_the_events(
    store: ChdbStore, chdb_engine: ChdbStore
) -> None:
    """503 with Retry-After from the real collector: retried as told, kept, then delivered."""
    broken = chdb_engine.using(f"gone_{uuid.uuid4().hex[:8]}")  # never migrated: inserts fail
    sleeps: list[float] = []
    options: dict[str, Any] = {
        "write_key": KEY,
        "site_id": SITE,
        "max_retries": 1,
        "sleep": sleeps.append,
    }
    with serve_asgi(collector_app(broken)) as url:
        client = FunnelClient(endpoint=url, **options)
        event_id = client.order("ord-3", customer_id="c-3")
        result = client.flush()
        assert result.failed == (event_id,)
        assert sleeps == [5.0]  # the collector's Retry-After, over a smaller jittered backoff
        assert client.close().failed == (event_id,)  # close retries once more, then gives up
        held = client.undelivered()
        assert [e.event_id for e in held] == [event_id]
    assert rows(store, "SELECT count() AS n FROM {db}.events") == [{"n": 0}]

    # A new client (e.g. after the operator fixed the store) re-sends the same event.
    with serve_asgi(collector_app(store)) as url, FunnelClient(endpoint=url, **options) as again:
        kept = held[0]
        resent = again.track(
            kept.type,
            customer_id=kept.customer_id,
            order_id=kept.order_id,
            occurred_at=kept.occurred_at,
            event_id=kept.event_id,
        )
        assert resent == event_id
    assert rows(store, "SELECT event_id FROM {db}.events") == [{"event_id": event_id}]


def create_topic(bootstrap: str) -> str:
    topic = f"sdk-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        admin.close()
    return topic


def consume(bootstrap: str, topic: str, n: int) -> list[Any]:
    """The first ``n`` records of ``topic`` (fewer if none came for 10 s)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) >= n:
                break
        return records
    finally:
        consumer.close()


def test_kafka_transport_produces_each_event_once_keyed_by_person(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    sent: dict[str, str] = {}  # event id -> person
    with FunnelClient(kafka=kafka_bootstrap, kafka_topic=topic, site_id=SITE, batch_size=7) as fc:
        for n in range(40):
            person = f"c-{n % 5}"
            sent[fc.payment(f"ord-{n}", customer_id=person, revenue=n, currency="EUR")] = person
        assert fc.flush() == FlushResult(delivered=40)

    ids: Counter[str] = Counter()
    for record in consume(kafka_bootstrap, topic, len(sent)):
        event = parse_event(record.value)
        ids[event.event_id] += 1
        assert record.key == f"{SITE}:{sent[event.event_id]}".encode()
        assert event.sent_at is not None
        assert json.loads(record.value)["site_id"] == SITE
    assert ids == Counter(dict.fromkeys(sent, 1))


def test_kafka_transport_keeps_the_events_while_the_broker_is_down(tmp_path: Path) -> None:
    """A stopped broker: each wait is bounded by ``timeout_s``, events are kept, then land once.

    This test owns its broker (it stops and restarts it), unlike the session broker.
    """
    broker = KafkaBroker(port=free_port(), data_dir=tmp_path / "kafka")
    bootstrap = broker.start()
    try:
        topic = create_topic(bootstrap)
        options: dict[str, Any] = {
            "kafka": bootstrap,
            "kafka_topic": topic,
            "site_id": SITE,
            "timeout_s": 2.0,
            "max_retries": 1,
            "sleep": lambda _: None,  # retry at once: the time measured is Kafka's alone
        }
        client = FunnelClient(**options)
        up = [client.payment(f"ord-{n}", customer_id=f"c-{n % 3}") for n in range(5)]
        assert client.flush() == FlushResult(delivered=5)

        broker.stop()
        down = [client.payment(f"ord-{n}", customer_id=f"c-{n % 3}") for n in range(5, 10)]
        started = time.monotonic()
        assert client.flush().failed == tuple(down)
        # Two attempts of at most timeout_s + 1 s each (kafka-python alone waits 120 s).
        assert time.monotonic() - started < 15
        started = time.monotonic()
        client.close(timeout=10)  # one more retry cycle, then the producer closes
        assert time.monotonic() - started < 15
        held = client.undelivered()
        assert [e.event_id for e in held] == down

        broker.start()  # same port and data
        with FunnelClient(**{**options, "max_retries": 8}) as again:
            for event in held:
                again.track(
                    event.type,
                    customer_id=event.customer_id,
                    order_id=event.order_id,
                    occurred_at=event.occurred_at,
                    event_id=event.event_id,
                )
            assert again.flush() == FlushResult(delivered=5)

        ids = Counter(parse_event(r.value).event_id for r in consume(bootstrap, topic, 10))
        assert ids == Counter(dict.fromkeys(up + down, 1))
    finally:
        broker.stop()
