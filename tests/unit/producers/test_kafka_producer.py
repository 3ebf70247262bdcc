"""EventProducer's bounds: what it asks of kafka-python, and a close that never hangs.

kafka-python is replaced by a recorder where the test is about the settings passed to it;
the one test about a real wait talks to a closed port on 127.0.0.1 (no broker needed).
"""

from __future__ import annotations

import gc
import logging
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

import producers.kafka_producer as kafka_producer
from funnel.events import parse_event
from producers.kafka_producer import DEFAULT_EVENTS_TOPIC, EventProducer

LINGER_MS = 5
EVENT_ID = "0b6e3f52-8f8e-4d2a-9a57-3c1f5d2e7a10"


class FakeSender:
    def __init__(self) -> None:
        self.forced = False

    def force_close(self) -> None:
        self.forced = True


class FakeKafkaProducer:
    """Records its settings and calls; ``close`` raises like kafka-python's when told to."""

    made: list[FakeKafkaProducer] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.closes: list[float | None] = []
        self.close_times_out = False
        self._sender = FakeSender()
        FakeKafkaProducer.made.append(self)

    def send(self, topic: str, *, key: bytes, value: bytes) -> str:
        self.sent.append((topic, key, value))
        return "future"

    def close(self, timeout: float | None = None) -> None:
        self.closes.append(timeout)
        if self.close_times_out and not self._sender.forced:
            raise KafkaTimeoutError("Timeout waiting for future")


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeKafkaProducer]:
    FakeKafkaProducer.made = []
    monkeypatch.setattr(kafka_producer, "KafkaProducer", FakeKafkaProducer)
    return FakeKafkaProducer


def test_every_wait_is_bounded_by_the_ack_timeout(fake_kafka: type[FakeKafkaProducer]) -> None:
    EventProducer("broker:9092", "t")
    config = fake_kafka.made[-1].config
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is True
    assert config["max_block_ms"] == 10_000  # send() blocks at most 10 s, not 60 s
    assert config["delivery_timeout_ms"] == 10_000  # a record lives 10 s, not 120 s
    assert config["bootstrap_timeout_ms"] == 10_000  # the constructor, not 30 s
    assert config["request_timeout_ms"] == 5_000  # room for one retried request

    EventProducer("broker:9092", ack_timeout_s=3.0)
    config = fake_kafka.made[-1].config
    assert config["max_block_ms"] == config["delivery_timeout_ms"] == 3_000


@pytest.mark.parametrize("ack_timeout_s", [0.05, 0.5, 1.0, 1.004, 1.5, 2.0, 10.0, 120.0])
def test_the_settings_satisfy_kafka_python_at_any_ack_timeout(
    fake_kafka: type[FakeKafkaProducer], ack_timeout_s: float
) -> None:
    EventProducer("broker:9092", ack_timeout_s=ack_timeout_s)
    config = fake_kafka.made[-1].config
    assert config["linger_ms"] == LINGER_MS
    assert config["delivery_timeout_ms"] == int(ack_timeout_s * 1000)
    assert config["request_timeout_ms"] > 0
    # kafka-python's RecordAccumulator refuses anything else (KafkaConfigurationError).
    assert config["delivery_timeout_ms"] >= config["linger_ms"] + config["request_timeout_ms"]


def test_an_ack_timeout_within_the_linger_time_is_refused(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    with pytest.raises(ValueError, match="ack_timeout_s"):
        EventProducer("broker:9092", ack_timeout_s=0.005)
    assert fake_kafka.made == []


def test_send_keys_the_event_by_person(fake_kafka: type[FakeKafkaProducer]) -> None:
    event = parse_event(
        {
            "event_id": EVENT_ID,
            "type": "click",
            "site_id": "shop",
            "anonymous_id": "dev-1",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
    )
    producer = EventProducer("broker:9092")
    future: object = producer.send(event)
    assert future == "future"  # kafka-python's future, handed back as it is
    [(topic, key, value)] = fake_kafka.made[-1].sent
    assert topic == DEFAULT_EVENTS_TOPIC
    assert key == event.partition_key.encode()
    assert parse_event(value).event_id == EVENT_ID


def test_close_waits_five_seconds_by_default(fake_kafka: type[FakeKafkaProducer]) -> None:
    with EventProducer("broker:9092"):
        pass
    EventProducer("broker:9092").close(None)
    assert [p.closes for p in fake_kafka.made] == [[5.0], [None]]


def test_close_aborts_what_is_still_pending_at_its_timeout(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    producer = EventProducer("broker:9092")
    kafka = fake_kafka.made[-1]
    kafka.close_times_out = True  # kafka-python raises and stays open when its flush times out
    producer.close(0.5)
    assert kafka._sender.forced
    assert kafka.closes[0] == 0.5
    assert len(kafka.closes) == 2


# kafka-python 3.0.x leaves its wakeup socket pair (AF_UNIX) to the garbage collector when its
# constructor fails. Its error logs (kept by pytest's log capture) would hold them past this
# test; without those, they are collected here, so the warnings are this test's.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket fd=\\d+, family=1:"
    "pytest.PytestUnraisableExceptionWarning"
)
def test_no_broker_fails_the_constructor_within_the_ack_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="kafka")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def attempt() -> type[BaseException] | None:
        # The exception (and its traceback, which holds the half-built client) dies when
        # this returns, so gc.collect() below meets the leaked sockets inside this test.
        try:
            EventProducer(f"127.0.0.1:{port}", ack_timeout_s=0.5)
        except KafkaTimeoutError as exc:
            return type(exc)
        return None

    started = time.monotonic()
    assert attempt() is KafkaTimeoutError
    assert time.monotonic() - started < 5  # kafka-python's default waits 30 s
    gc.collect()


class _Cluster:
    """The part of kafka-python's ClusterMetadata a partitioner reads."""

    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


@pytest.mark.parametrize("partitions", [1, 4, 7, 12])
def test_the_cached_partitioner_places_keys_as_kafkas_default_does(partitions: int) -> None:
    from kafka.partitioner import DefaultPartitioner

    cluster = _Cluster(partitions)
    ours, theirs = kafka_producer.KeyHashPartitioner(), DefaultPartitioner()
    keys = [f"site-{i % 3}:person-{i}".encode() for i in range(500)] + [b"", b"\xff" * 9]
    for _ in range(2):  # the second pass is answered from the cache
        for key in keys:
            expected = theirs.partition("t", key, key, None, None, cluster)
            assert ours.partition("t", key, key, None, None, cluster) == expected
