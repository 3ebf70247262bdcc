"""Keyed records to Kafka through librdkafka (confluent-kafka): the collector's producer.

Why not kafka-python here, as elsewhere: on the collector's hot path the producer's own cost
per record bounds the whole process. kafka-python builds and sends its batches in Python
(about 21-26 µs of CPU per event on the collector's records, on the event loop's core);
librdkafka does it in C threads of its own (about 5 µs per event, delivery callbacks
included), measured side by side on the same records by ``benchmarks/bench_collector.py``
(``producer`` and ``producer_ck`` targets). The SDK, the simulator and the tests keep
kafka-python (:mod:`producers.kafka_producer`): their volume is not a process's ceiling.

The guarantees are the collector's (:class:`~producers.collector.KafkaDelivery`): ``acks=all``
and idempotence; records placed as Kafka's default partitioner places them (murmur2 of the
key, as the Java client, kafka-python and aiokafka do: the workers rely on it); every record
settled (acknowledged or failed) at the latest ``ack_timeout_s`` after it was queued
(``delivery.timeout.ms``), and never sent again after that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer

__all__ = ["RecordProducer", "SendRefused"]

log = logging.getLogger(__name__)


class SendRefused(Exception):
    """The producer did not take a record (its queue is full, or it failed for good)."""


class RecordProducer:
    """Queue keyed records; a callback when all of a group are settled.

    A thread of ours serves librdkafka's delivery reports (``poll``); the callbacks of
    :meth:`send_all` run on it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        ack_timeout_s: float = 10.0,
        linger_ms: int = 2,
        client_id: str = "funnel-collector",
    ) -> None:
        timeout_ms = int(ack_timeout_s * 1000)
        if timeout_ms <= linger_ms:
            raise ValueError(f"ack_timeout_s must exceed the linger time ({linger_ms} ms)")
        self.fatal: str | None = None
        """Why the producer failed for good (an idempotence failure), or ``None``."""
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": linger_ms,
                "compression.type": "none",  # CPU per event is what bounds the collector
                "partitioner": "murmur2_random",  # Kafka's default placement of keyed records
                "delivery.timeout.ms": timeout_ms,
                "request.timeout.ms": min(max(1000, timeout_ms // 2), timeout_ms - linger_ms),
                "message.max.bytes": 1_000_000,
                "logger": log,
                "error_cb": self._on_error,
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="funnel-kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _on_error(self, error: Any) -> None:
        if error.fatal():
            self.fatal = str(error)
            log.error("the Kafka producer failed for good: %s", error)
        else:  # transient (a broker down, a connection lost): records retry until their bound
            log.debug("Kafka producer: %s", error)

    def send_all(
        self,
        records: Iterable[tuple[bytes, bytes]],
        done: Callable[[BaseException | None], None],
        *,
        topic: str,
    ) -> int:
        """Queue ``(key, value)`` records to ``topic``; call ``done`` once, when all of them
        are settled: ``done(None)`` when the broker acknowledged every one, else with the first
        failure. Raises :class:`SendRefused` if a record is not taken (those queued before it
        settle unobserved). Returns the number queued."""
        if self.fatal is not None:
            raise SendRefused(self.fatal)
        items = list(records)
        left = [len(items)]  # records not settled yet; -1 once done was called
        lock = threading.Lock()

        def delivered(error: Any, _message: Any) -> None:
            with lock:
                if left[0] < 0:
                    return
                left[0] = -1 if error is not None or left[0] == 1 else left[0] - 1
                if left[0] >= 0:
                    return
            done(None if error is None else Exception(str(error)))

        if not items:
            done(None)
        produce = self._producer.produce
        try:
            for key, value in items:
                produce(topic, value, key, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            with lock:
                left[0] = -1
            raise SendRefused(str(exc)) from exc
        return len(items)

    def partitions_for(self, topic: str, timeout_s: float = 10.0) -> set[int]:
        """The topic's partitions (fetches its metadata; raises :class:`SendRefused` if it
        cannot)."""
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise SendRefused(str(exc)) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise SendRefused(f"no metadata for topic {topic!r}: {found and found.error}")
        return set(found.partitions)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending (waiting at most ``timeout``), then stop."""
        try:
            self._producer.flush(timeout)
        finally:
            self._stop.set()
            self._poller.join(timeout=5)
