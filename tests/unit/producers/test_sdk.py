"""The back-end SDK against a tiny real HTTP server with scripted answers.

The server is stdlib ``http.server`` on 127.0.0.1 in a thread; it decodes what the SDK sent
(gzip JSON), records it, and answers from a script (503 with ``Retry-After``, partial
rejections, 413 …) or by accepting. Backoff sleeps go to an injected ``sleep`` that only
records them, and the jitter comes from an injected RNG: nothing here waits for real time
except the one test that proves ``flush(timeout=…)`` returns while the server holds a request.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from funnel.events import Event, InvalidEvent, parse_event
from producers.kafka_producer import DEFAULT_EVENTS_TOPIC
from producers.sdk import (
    EVENT_ID_NAMESPACE,
    ClientClosed,
    Delivered,
    EventFields,
    FlushResult,
    FunnelClient,
    KafkaTransport,
    QueueFull,
    RejectedEvent,
    Retry,
    event_id_for,
)

KEY = "sdk-test-key"
SITE = "shop"

Item = dict[str, Any]
Reply = tuple[int, dict[str, str], dict[str, Any]]
Responder = Callable[[list[Item]], Reply]


def accept(items: list[Item]) -> Reply:
    return 200, {}, {"accepted": len(items), "rejected": []}


def unavailable(retry_after: str | None = "0") -> Responder:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}

    def reply(items: list[Item]) -> Reply:
        return 503, headers, {"error": "unavailable", "message": "events were not stored"}

    return reply


def reject_where(refuse: Callable[[Item], bool]) -> Responder:
    """Like the collector: refused items listed by index; 400 when all are refused."""

    def reply(items: list[Item]) -> Reply:
        rejected = [
            {"index": i, "errors": [{"field": "order_id", "reason": "unknown", "code": "bad"}]}
            for i, item in enumerate(items)
            if refuse(item)
        ]
        accepted = len(items) - len(rejected)
        status = 400 if rejected and not accepted else 200
        return status, {}, {"accepted": accepted, "rejected": rejected}

    return reply


def too_large_over(limit: int) -> Responder:
    def reply(items: list[Item]) -> Reply:
        if len(items) > limit:
            return 413, {}, {"error": "body_too_large", "message": "the body is over the limit"}
        return accept(items)

    return reply


@dataclass(frozen=True)
class Request:
    items: list[Item]
    headers: dict[str, str]
    status: int

    @property
    def ids(self) -> list[str]:
        return [item["event_id"] for item in self.items]


class ScriptedCollector:
    """A real HTTP server answering ``POST /v1/batch``: scripted replies first, then ``default``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: deque[Responder] = deque()
        self.default: Responder = accept
        self.gate: threading.Event | None = None  # when set: hold each request until released
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                items = json.loads(body)
                collector.arrived.set()
                if collector.gate is not None:
                    collector.gate.wait(10)
                headers: dict[str, str]
                with collector._lock:
                    if self.headers.get("X-Funnel-Key") != KEY:
                        status, headers, answer = 401, {}, {"error": "unauthorized", "message": "?"}
                    else:
                        responder = collector.script.popleft() if collector.script else None
                        status, headers, answer = (responder or collector.default)(items)
                    collector.requests.append(Request(items, dict(self.headers), status))
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def accepted_ids(self) -> list[str]:
        """Ids the server acknowledged as stored (2xx, minus the items it listed as refused)."""
        with self._lock:
            return [i for r in self.requests if r.status == 200 for i in r.ids]

    def sizes(self) -> list[int]:
        return [len(r.items) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def collector() -> Iterator[ScriptedCollector]:
    server = ScriptedCollector()
    yield server
    if server.gate is not None:
        server.gate.set()
    server.close()


class Clients:
    """Makes clients against the scripted collector; records backoff sleeps; closes them all."""

    def __init__(self, collector: ScriptedCollector) -> None:
        self.collector = collector
        self.sleeps: list[float] = []
        self.made: list[FunnelClient] = []

    def __call__(self, **options: Any) -> FunnelClient:
        settings: dict[str, Any] = {
            "endpoint": self.collector.url,
            "write_key": KEY,
            "site_id": SITE,
            "sleep": self.sleeps.append,
            "rng": lambda: 0.5,
            "flush_interval_s": 3600.0,  # batches leave when full or flushed, never by the clock
            "timeout_s": 5.0,
            **options,
        }
        client = FunnelClient(**settings)
        self.made.append(client)
        return client


@pytest.fixture
def make_client(collector: ScriptedCollector) -> Iterator[Clients]:
    clients = Clients(collector)
    yield clients
    collector.script.clear()
    collector.default = accept
    if collector.gate is not None:
        collector.gate.set()
    for client in clients.made:
        client.close(timeout=10)


def order(client: FunnelClient, n: int, **fields: Any) -> str:
    return client.order(f"ord-{n}", customer_id=f"c-{n}", revenue="10.50", currency="EUR", **fields)


def test_wire_format_gzip_json_with_key_and_sent_at(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    client = make_client()
    event_id = client.payment(
        "ord-7",
        customer_id="c-7",
        revenue=Decimal("99.9"),
        currency="EUR",
        manager_id="m-1",
        properties={"plan": "pro", "seats": 3},
        occurred_at=datetime(2026, 10, 1, 12, 0, tzinfo=UTC),
    )
    assert client.flush() == FlushResult(delivered=1)
    [request] = collector.requests
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Funnel-Key"] == KEY
    [item] = request.items
    sent_at = datetime.fromisoformat(item.pop("sent_at"))
    assert sent_at.tzinfo is not None
    assert item == {
        "event_id": event_id,
        "type": "payment",
        "site_id": SITE,
        "customer_id": "c-7",
        "occurred_at": "2026-10-01T12:00:00Z",
        "order_id": "ord-7",
        "revenue": "99.9",
        "currency": "EUR",
        "manager_id": "m-1",
        "properties": {"plan": "pro", "seats": 3},
    }


def test_occurred_at_defaults_to_now_in_utc(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    now = datetime(2026, 11, 2, 8, 30, tzinfo=UTC)
    client = make_client(clock=lambda: now)
    client.lead(customer_id="crm-1", form="contact", intent="consultation")
    client.flush()
    [item] = collector.requests[0].items
    assert item["occurred_at"] == "2026-11-02T08:30:00Z"
    assert item["lead"] == {"form": "contact", "intent": "consultation"}


def test_a_retried_batch_keeps_its_event_ids(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    collector.script.extend([unavailable("0"), unavailable(None), unavailable("7")])
    client = make_client()
    ids = [order(client, n) for n in range(3)]
    result = client.flush()
    assert result.ok
    assert result.delivered == 3
    assert [r.status for r in collector.requests] == [503, 503, 503, 200]
    assert all(r.ids == ids for r in collector.requests)  # same ids, same order, every attempt
    # Full jitter with rng=0.5, base 0.5 s: 0.25, 0.5, then Retry-After: 7 wins over 1.0.
    assert make_client.sleeps == [0.25, 0.5, 7.0]
    assert client.stats.retries == 3


def test_rejected_items_are_reported_and_never_retried(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    collector.default = reject_where(lambda item: item["order_id"] == "ord-1")
    seen: list[RejectedEvent] = []
    client = make_client(on_rejected=seen.append)
    ids = [order(client, n) for n in range(3)]
    result = client.flush()
    errors = ({"field": "order_id", "reason": "unknown", "code": "bad"},)
    assert result.rejected == (RejectedEvent(ids[1], errors),)
    assert result.delivered == 2
    assert not result.ok
    assert seen == [RejectedEvent(ids[1], errors)]
    assert seen[0].event is not None
    assert seen[0].event.order_id == "ord-1"  # the refused event itself, e.g. to keep locally
    assert client.stats.rejected == 1

    # A batch refused as a whole (400) is reported the same way, and also not retried.
    only_bad = order(client, 1)
    result = client.flush()
    assert result.rejected == (RejectedEvent(only_bad, errors),)
    assert result.delivered == 0
    assert [r.status for r in collector.requests] == [200, 400]
    assert client.flush() == FlushResult()  # each outcome is reported once


def test_a_bad_write_key_refuses_the_batch_without_retrying(make_client: Clients) -> None:
    client = make_client(write_key="wrong")
    event_id = order(client, 1)
    result = client.flush()
    assert [r.codes for r in result.rejected] == [("unauthorized",)]
    assert result.rejected[0].event_id == event_id
    assert make_client.sleeps == []
    assert client.undelivered() == []


def test_413_splits_the_batch_in_halves(collector: ScriptedCollector, make_client: Clients) -> None:
    collector.default = too_large_over(2)
    client = make_client()
    ids = [order(client, n) for n in range(5)]
    result = client.flush()
    assert result.ok
    assert result.delivered == 5
    assert collector.sizes() == [5, 2, 3, 1, 2]
    assert collector.accepted_ids() == ids  # each once, in order
    assert make_client.sleeps == []  # splitting is not a failure

    # The client remembers: later batches are at most half of what was too large.
    more = [order(client, n) for n in range(5, 9)]
    client.flush()
    assert collector.sizes()[5:] == [1, 1, 1, 1]
    assert collector.accepted_ids() == ids + more


def test_a_single_event_too_large_is_rejected(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    collector.default = too_large_over(0)
    client = make_client()
    event_id = order(client, 1)
    result = client.flush()
    assert [(r.event_id, r.codes) for r in result.rejected] == [(event_id, ("too_large",))]


def test_backoff_is_full_jitter_under_a_cap(make_client: Clients) -> None:
    draws = iter([0.0, 0.999, 0.5, 0.25, 1.0 - 1e-12, 0.1, 0.0])
    client = make_client(rng=lambda: next(draws), backoff_base_s=0.5, backoff_cap_s=4.0)
    delays = [client.backoff_delay(attempt) for attempt in range(6)]
    assert delays == pytest.approx([0.0, 0.999, 1.0, 1.0, 4.0, 0.4])
    assert client.backoff_delay(50, retry_after=9.0) == 9.0  # Retry-After is a floor


def test_idempotency_keys_give_deterministic_ids(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    expected = str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{SITE}:payment:ord-1"))
    assert event_id_for(SITE, "payment:ord-1") == expected
    assert event_id_for("other-site", "payment:ord-1") != expected
    first, after_a_crash = make_client(), make_client()
    fields: EventFields = {
        "customer_id": "c-1",
        "revenue": "5",
        "currency": "USD",
        "idempotency_key": "payment:ord-1",
    }
    a = first.payment("ord-1", **fields)
    b = after_a_crash.payment("ord-1", **fields)
    first.flush()
    after_a_crash.flush()
    assert a == b == expected
    assert collector.accepted_ids() == [expected, expected]
    with pytest.raises(InvalidEvent, match="not both"):
        first.track("order", customer_id="c", event_id=str(uuid.uuid4()), idempotency_key="k")


def test_invalid_input_raises_at_track_time(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    client = make_client()
    with pytest.raises(InvalidEvent) as naive:
        client.order("o", customer_id="c", occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001
    assert naive.value.errors[0]["field"] == "occurred_at"
    with pytest.raises(InvalidEvent, match="anonymous_id and customer_id"):
        client.track("click")
    with pytest.raises(InvalidEvent, match="currency"):
        client.order("o", customer_id="c", revenue="10")
    with pytest.raises(InvalidEvent, match="type"):
        client.track("signup", customer_id="c")
    assert client.flush() == FlushResult()
    assert collector.requests == []
    assert client.stats.tracked == 0


def test_queue_full_raises_and_drops_nothing(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    client = make_client(max_queue=3)  # batches leave only when flushed (no clock, not full)
    ids = [order(client, n) for n in range(3)]
    with pytest.raises(QueueFull):
        order(client, 3)
    assert client.stats.held == 3
    assert client.flush().delivered == 3
    ids.append(order(client, 3))  # room again
    client.flush()
    assert collector.accepted_ids() == ids


def test_concurrent_tracking_delivers_every_event_exactly_once(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    collector.script.extend([unavailable("0"), accept, unavailable("0"), unavailable("0")])
    client = make_client(batch_size=25)
    threads, per_thread = 8, 150
    start = threading.Barrier(threads)
    tracked: list[list[str]] = [[] for _ in range(threads)]

    def work(t: int) -> None:
        start.wait()
        for n in range(per_thread):
            tracked[t].append(client.track("click", anonymous_id=f"t{t}", properties={"n": n}))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result = client.flush()
    assert result.ok
    arrived = Counter(collector.accepted_ids())
    expected = {i for ids in tracked for i in ids}
    assert len(expected) == threads * per_thread
    assert set(arrived) == expected
    assert max(arrived.values()) == 1
    stats = client.stats
    assert (stats.tracked, stats.delivered, stats.held) == (1200, 1200, 0)
    # Each thread's events left in the order it tracked them.
    order_seen = collector.accepted_ids()
    for ids in tracked:
        positions = [order_seen.index(i) for i in ids]
        assert positions == sorted(positions)


def test_after_max_retries_events_are_kept_and_reported_failed(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    collector.default = unavailable("0")
    client = make_client(max_retries=2)
    ids = [order(client, n) for n in range(3)]
    result = client.flush()
    assert result.failed == tuple(ids)
    assert not result.timed_out
    assert not result.ok
    assert collector.sizes() == [3, 3, 3]  # one attempt and two retries
    assert client.stats.failed_cycles == 1
    assert [e.event_id for e in client.undelivered()] == ids

    collector.default = accept  # the collector is back: the next flush resumes at once
    result = client.flush()
    assert result.ok
    assert result.delivered == 3
    assert collector.accepted_ids() == ids  # the very same ids


def test_network_errors_are_retried(make_client: Clients) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(endpoint=f"http://127.0.0.1:{port}", max_retries=1)
    event_id = order(client, 1)
    result = client.flush()
    assert result.failed == (event_id,)
    assert make_client.sleeps == [0.25]


def test_flush_waits_for_the_acknowledgement_or_its_timeout(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    collector.gate = threading.Event()  # the server holds every request until released
    client = make_client()
    event_id = order(client, 1)
    result = client.flush(timeout=0.2)
    assert result.timed_out
    assert collector.arrived.wait(10)  # the request is there, unanswered
    assert result.failed == (event_id,)
    assert collector.requests == []  # nothing answered yet: the event is still held
    collector.gate.set()
    result = client.flush()
    assert result.ok
    assert result.delivered == 1
    assert collector.accepted_ids() == [event_id]


def test_batches_leave_on_their_own_when_full_or_due(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    full = make_client(batch_size=2)
    ids = [order(full, 1), order(full, 2)]
    assert collector.arrived.wait(10)  # a full batch leaves without a flush
    assert full.flush().delivered == 2
    assert collector.accepted_ids() == ids

    collector.arrived.clear()
    due = make_client(flush_interval_s=0.05)
    late = order(due, 3)
    assert collector.arrived.wait(10)  # so does one event, once it waited flush_interval_s
    assert due.flush() == FlushResult(delivered=1)
    assert collector.accepted_ids() == [*ids, late]


def test_close_flushes_and_refuses_new_events(
    collector: ScriptedCollector, make_client: Clients
) -> None:
    with make_client() as client:
        ids = [order(client, n) for n in range(4)]
    assert collector.accepted_ids() == ids
    with pytest.raises(ClientClosed):
        order(client, 5)
    assert client.close().ok  # idempotent


def test_constructor_needs_exactly_one_destination() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FunnelClient(site_id=SITE)
    with pytest.raises(ValueError, match="exactly one"):
        FunnelClient(site_id=SITE, endpoint="http://x", write_key=KEY, kafka="localhost:9092")
    with pytest.raises(ValueError, match="write_key"):
        FunnelClient(site_id=SITE, endpoint="http://x")


# --- the Kafka transport, with the producer replaced by a scripted one -------------------


class ScriptedFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class ScriptedProducer:
    """Stands in for EventProducer: ``send`` raises or fails per event, as scripted."""

    made: list[ScriptedProducer] = []
    raises: dict[int, Exception] = {}  # the nth send raises
    fails: dict[int, Exception] = {}  # the nth send's future fails

    def __init__(self, bootstrap_servers: str, topic: str, *, ack_timeout_s: float) -> None:
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self.sent: list[str] = []
        self.closed = 0
        ScriptedProducer.made.append(self)

    def send(self, event: Event) -> ScriptedFuture:
        n = len(self.sent)
        self.sent.append(event.event_id)
        if n in self.raises:
            raise self.raises[n]
        return ScriptedFuture(self.fails.get(n))

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def scripted_kafka(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedProducer]:
    import producers.kafka_producer

    ScriptedProducer.made, ScriptedProducer.raises, ScriptedProducer.fails = [], {}, {}
    monkeypatch.setattr(producers.kafka_producer, "EventProducer", ScriptedProducer)
    return ScriptedProducer


def events(n: int) -> list[Event]:
    return [
        parse_event(
            {
                "event_id": str(uuid.uuid4()),
                "type": "payment",
                "site_id": SITE,
                "customer_id": "c-1",
                "order_id": f"ord-{i}",
                "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            }
        )
        for i in range(n)
    ]


def test_kafka_transport_bounds_the_producer_by_its_timeout(
    scripted_kafka: type[ScriptedProducer],
) -> None:
    transport = KafkaTransport("broker:9092", timeout_s=3.0)
    assert transport.send(events(3)) == Delivered()
    assert transport.send(events(2)) == Delivered()
    [producer] = scripted_kafka.made  # made once, on first use
    assert producer.topic == DEFAULT_EVENTS_TOPIC
    assert producer.ack_timeout_s == 3.0
    transport.close()
    transport.close()
    assert producer.closed == 1


def test_kafka_transport_retries_only_the_records_not_acknowledged(
    scripted_kafka: type[ScriptedProducer],
) -> None:
    scripted_kafka.raises = {1: ValueError("too large")}  # this record only
    scripted_kafka.fails = {3: KafkaTimeoutError("Expiring 1 record(s)")}
    verdict = KafkaTransport("broker:9092", topic="t").send(events(5))
    assert isinstance(verdict, Retry)
    assert verdict.indexes == (1, 3)
    assert len(scripted_kafka.made[0].sent) == 5


def test_kafka_transport_stops_sending_when_a_send_blocked_until_its_timeout(
    scripted_kafka: type[ScriptedProducer],
) -> None:
    # No topic metadata: each further send would block as long again.
    scripted_kafka.raises = {1: KafkaTimeoutError("Failed to update metadata")}
    batch = events(4)
    verdict = KafkaTransport("broker:9092").send(batch)
    assert isinstance(verdict, Retry)
    assert verdict.indexes == (1, 2, 3)
    assert scripted_kafka.made[0].sent == [e.event_id for e in batch[:2]]
