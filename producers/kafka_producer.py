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

from types import TracebackType
from typing import Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from funnel.events import Event

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


class EventProducer:
    """A Kafka producer of validated events; every wait is bounded (see the module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_EVENTS_TOPIC,
        *,
        ack_timeout_s: float = 10.0,
    ) -> None:
        timeout_ms = int(ack_timeout_s * 1000)
        if timeout_ms <= _LINGER_MS:
            raise ValueError(f"ack_timeout_s must exceed the linger time ({_LINGER_MS} ms)")
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
            linger_ms=_LINGER_MS,
            compression_type="gzip",
            max_block_ms=timeout_ms,
            request_timeout_ms=min(max(1000, timeout_ms // 2), timeout_ms - _LINGER_MS),
            delivery_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            client_id="funnel-producer",
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
