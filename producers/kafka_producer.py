"""Producing events to Kafka (kafka-python): durable acknowledgements, ordered per person.

The producer is idempotent with ``acks="all"``; each event is keyed by its
``partition_key`` (``site_id:person``) so that a person's events stay in one partition, in
order.

What blocks, and for how long (``ack_timeout_s``, 10 s by default, as in the collector's
:class:`~producers.collector.KafkaDelivery`):

* the constructor waits at most ``ack_timeout_s`` for a broker, then raises
  ``KafkaTimeoutError``;
* :meth:`EventProducer.send` blocks at most ``ack_timeout_s`` (no topic metadata yet, a full
  buffer), then raises ``KafkaTimeoutError``; otherwise it returns a :class:`SendFuture`;
* that future resolves once the broker acknowledged the record, or fails at the latest
  ``ack_timeout_s`` after ``send`` returned. The producer never sends a failed record again
  (it may still be in the topic if only its acknowledgement was lost);
* :meth:`EventProducer.flush` blocks until every record sent so far is settled: acknowledged
  *or failed* (a failure shows on the record's future, not here);
* :meth:`EventProducer.close` waits at most ``timeout`` for records still pending.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.partitioner import DefaultPartitioner

from funnel.events import Event
from stream_processors.topics import partition_of

__all__ = ["DEFAULT_EVENTS_TOPIC", "EventProducer", "RecordMetadata", "SendFuture"]

DEFAULT_EVENTS_TOPIC = "funnel.events"

_LINGER_MS = 5
_CLOSE_AFTER_ABORT_S = 1.0  # the I/O thread fails the aborted records and stops at once


class RecordMetadata(Protocol):
    """Where the broker stored a record (kafka-python's ``RecordMetadata``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class SendFuture(Protocol):
    """The outcome of one :meth:`EventProducer.send` (kafka-python's ``FutureRecordMetadata``).

    kafka-python has no type stubs, so this states the part callers use.
    """

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Block until the broker acknowledged the record; raise ``KafkaError`` if it failed.

        Raises ``KafkaTimeoutError`` if ``timeout`` seconds passed first.
        """
        ...


class KeyHashPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """Kafka's default placement (murmur2 of the key, as the Java client and aiokafka do),
    remembered per key: a visitor's batch repeats its key, and kafka-python's murmur2 is
    pure Python (a fifth of the cost of a send)."""

    def partition(
        self,
        topic: str,
        key: object,
        serialized_key: bytes | None,
        value: object,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(super().partition(topic, key, None, value, serialized_value, cluster))
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        return partition_of(serialized_key, len(partitions))


class EventProducer:
    """A Kafka producer of validated events; every wait is bounded (see the module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_EVENTS_TOPIC,
        *,
        ack_timeout_s: float = 10.0,
        compression: str | None = "gzip",
        linger_ms: int = _LINGER_MS,
        client_id: str = "funnel-producer",
    ) -> None:
        timeout_ms = int(ack_timeout_s * 1000)
        if timeout_ms <= linger_ms:
            raise ValueError(f"ack_timeout_s must exceed the linger time ({linger_ms} ms)")
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        # kafka-python's defaults let send() block 60 s (max_block_ms) and a record wait 120 s
        # for its ack (delivery_timeout_ms). Bounded by ack_timeout_s, as the collector's
        # KafkaDelivery bounds its records: once a caller has waited that long, the record
        # has failed for good (kafka-python's idempotent producer does expire records), so a
        # retry with the same event id cannot meet a late first copy (short of a lost ack).
        # request_timeout_ms is half of it, leaving room for one retried request, and capped
        # because kafka-python requires delivery_timeout_ms >= linger_ms + request_timeout_ms.
        # bootstrap_timeout_ms (30 s by default) bounds the constructor too: the SDK's
        # KafkaTransport makes the producer on first use, in its sender thread.
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            batch_size=256 * 1024,
            compression_type=compression,
            partitioner=KeyHashPartitioner(),
            max_block_ms=timeout_ms,
            request_timeout_ms=min(max(1000, timeout_ms // 2), timeout_ms - linger_ms),
            delivery_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            client_id=client_id,
        )

    def send(self, event: Event) -> SendFuture:
        """Queue one event; the returned future resolves when the broker acknowledged it.

        Blocks at most ``ack_timeout_s`` (then raises ``KafkaTimeoutError``).
        """
        return self.send_raw(
            event.partition_key.encode(), event.model_dump_json(exclude_none=True).encode()
        )

    def send_raw(self, key: bytes, value: bytes) -> SendFuture:
        """Queue a payload as it is (a replay of recorded traffic, malformed items included)."""
        future: SendFuture = self._producer.send(self.topic, key=key, value=value)
        return future

    def send_all(
        self,
        records: Iterable[tuple[bytes, bytes]],
        done: Callable[[BaseException | None], None],
        *,
        topic: str | None = None,
    ) -> int:
        """Queue ``(key, value)`` records; call ``done`` once, when all of them are settled.

        ``done(None)`` means the broker acknowledged every record; ``done(error)`` comes with
        the first failure. It is called on the producer's I/O thread, or here when a record
        settled before its callback was added. Each send blocks as :meth:`send_raw` does; a
        send that raises leaves the records queued before it to settle unobserved. Returns
        the number queued. ``topic`` defaults to the producer's.
        """
        send, to = self._producer.send, topic or self.topic
        futures = [send(to, key=key, value=value) for key, value in records]
        left = [len(futures)]  # records not settled yet; -1 once done was called
        lock = threading.Lock()

        def settled(outcome: object) -> None:
            with lock:
                if left[0] < 0:
                    return
                failed = isinstance(outcome, BaseException)
                left[0] = -1 if failed or left[0] == 1 else left[0] - 1
                if left[0] >= 0:
                    return
            done(outcome if isinstance(outcome, BaseException) else None)

        if not futures:
            done(None)
        for future in futures:
            future.add_both(settled)
        return len(futures)

    def partitions_for(self, topic: str | None = None) -> set[int]:
        """The topic's partitions (fetches its metadata; blocks at most ``ack_timeout_s``)."""
        return set(self._producer.partitions_for(topic or self.topic))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every sent event is acknowledged or failed.

        Raises ``KafkaTimeoutError`` if ``timeout`` seconds pass first. A failed event does not
        raise here: the failure shows on its future.
        """
        self._producer.flush(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Send what is pending, then release the connections; wait at most ``timeout`` s.

        Records still pending after ``timeout`` are abandoned: their futures fail. With
        ``None`` it waits until each is settled, which takes at most ``ack_timeout_s``.
        """
        try:
            self._producer.close(timeout)
        except KafkaTimeoutError:
            # kafka-python 3 flushes first in close(), and when that flush outlasts the timeout
            # it raises without closing: its I/O thread would go on sending. Abort what is
            # pending (the futures fail), as its close() does when the I/O thread outlasts the
            # timeout, and close again: nothing is left to wait for then.
            self._producer._sender.force_close()
            self._producer.close(_CLOSE_AFTER_ABORT_S)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
