"""Producing events to Kafka (kafka-python): durable acknowledgements, ordered per person.

The producer is idempotent with ``acks="all"``; each event is keyed by its
``partition_key`` (``site_id:person``) so that a person's events stay in one partition, in
order. :meth:`EventProducer.send` returns a future; :meth:`EventProducer.flush` blocks until
every sent event is acknowledged by the broker (or raises).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from kafka import KafkaProducer

from funnel.events import Event

__all__ = ["DEFAULT_EVENTS_TOPIC", "EventProducer"]

DEFAULT_EVENTS_TOPIC = "funnel.events"


class EventProducer:
    """A Kafka producer of validated events."""

    def __init__(self, bootstrap_servers: str, topic: str = DEFAULT_EVENTS_TOPIC) -> None:
        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            compression_type="gzip",
            client_id="funnel-producer",
        )

    def send(self, event: Event) -> Any:
        """Queue one event; the returned future resolves when the broker acknowledged it."""
        return self._producer.send(
            self.topic,
            key=event.partition_key.encode(),
            value=event.model_dump_json(exclude_none=True).encode(),
        )

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued event is acknowledged."""
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
