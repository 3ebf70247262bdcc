"""The Kafka transport: straight to the events topic, no collector in between."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from funnel.events import Event
from producers.sdk._transport import Delivered, Retry, SendResult, wall_clock

if TYPE_CHECKING:  # imported when first used: Kafka stays an optional dependency
    from producers.kafka_producer import EventProducer, SendFuture

__all__ = ["KafkaTransport"]

# The producer fails a record ``timeout_s`` after it was sent (its delivery timeout); waiting
# a little longer lets that verdict arrive, so "not acknowledged" means failed for good.
_ACK_GRACE_S = 1.0


class KafkaTransport:
    """Produce to the events topic with :class:`~producers.kafka_producer.EventProducer`.

    Delivered means the broker acknowledged (``acks=all``); a record that failed or was not
    acknowledged within ``timeout_s`` is retried (only those records). The producer is made
    on first use, so a client starts even while the broker is down. Each step blocks for at
    most ``timeout_s`` (the producer's ``ack_timeout_s``): reaching a broker, each send, and
    the wait for the acknowledgements (plus a second's grace).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = wall_clock,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_s = timeout_s
        self._clock = clock
        self._producer: EventProducer | None = None

    def _connect(self) -> EventProducer:
        if self._producer is None:
            from producers.kafka_producer import DEFAULT_EVENTS_TOPIC, EventProducer

            topic = DEFAULT_EVENTS_TOPIC if self.topic is None else self.topic
            self._producer = EventProducer(
                self.bootstrap_servers, topic, ack_timeout_s=self.timeout_s
            )
        return self._producer

    def send(self, events: Sequence[Event]) -> SendResult:
        try:
            producer = self._connect()
        except Exception as exc:  # KafkaTimeoutError and kin: the broker is not there yet
            return Retry(f"cannot connect to Kafka: {exc}")
        from kafka.errors import KafkaTimeoutError

        update = {"sent_at": self._clock()}
        futures: list[tuple[int, SendFuture]] = []
        failed: list[int] = []
        reason = ""
        for i, event in enumerate(events):
            try:
                futures.append((i, producer.send(event.model_copy(update=update))))
            except KafkaTimeoutError as exc:
                # send() blocked for timeout_s (no topic metadata, a full buffer): the next
                # sends would block as long each. Keep them for the retry, in order.
                failed.extend(range(i, len(events)))
                reason = str(exc)
                break
            except Exception as exc:  # this record only (e.g. too large for the broker)
                failed.append(i)
                reason = str(exc)
        deadline = time.monotonic() + self.timeout_s + _ACK_GRACE_S
        for i, future in futures:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # KafkaError, KafkaTimeoutError: not acknowledged
                failed.append(i)
                reason = str(exc)
        if failed:
            return Retry(f"Kafka did not acknowledge: {reason}", indexes=tuple(sorted(failed)))
        return Delivered()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
