"""The client: validates and queues events; the sender delivers them in the background."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TypedDict, Unpack

from funnel.events import Context, Event, EventType, InvalidEvent, LeadInfo, parse_event
from producers.sdk._http import HttpTransport
from producers.sdk._ids import event_id_for, random_event_id
from producers.sdk._kafka import KafkaTransport
from producers.sdk._results import ClientStats, FlushResult, RejectedEvent
from producers.sdk._sender import Sender
from producers.sdk._transport import Transport, wall_clock

__all__ = ["EventFields", "FunnelClient", "Scalar"]

log = logging.getLogger("producers.sdk")

Scalar = str | int | float | bool | None


class EventFields(TypedDict, total=False):
    """Optional fields of the convenience methods (see :meth:`FunnelClient.track`)."""

    anonymous_id: str
    customer_id: str
    occurred_at: datetime
    revenue: Decimal | str | int | float
    currency: str
    manager_id: str
    properties: Mapping[str, Scalar]
    context: Mapping[str, object] | Context
    event_id: str
    idempotency_key: str


def _invalid(field: str, reason: str, code: str) -> InvalidEvent:
    return InvalidEvent([{"field": field, "reason": reason, "code": code}])


class FunnelClient:
    """Tracks back-end events and delivers them in the background (see ``producers.sdk``).

    Give exactly one destination: ``endpoint`` and ``write_key`` (the HTTP collector),
    ``kafka`` (bootstrap servers; events go straight to the events topic), or ``transport``.
    ``rng`` (floats in [0, 1)) and ``sleep`` are injectable so tests need no real waiting.
    ``on_rejected`` is called from the sender thread, once per rejected event, before the
    event counts as settled (so after ``flush`` returns, its callbacks have run); it must not
    call :meth:`flush`.
    """

    def __init__(
        self,
        *,
        site_id: str,
        endpoint: str | None = None,
        write_key: str | None = None,
        kafka: str | None = None,
        kafka_topic: str | None = None,
        transport: Transport | None = None,
        batch_size: int = 100,
        flush_interval_s: float = 1.0,
        max_queue: int = 10_000,
        max_retries: int = 8,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        timeout_s: float = 10.0,
        on_rejected: Callable[[RejectedEvent], None] | None = None,
        rng: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], datetime] = wall_clock,
        exit_timeout_s: float = 10.0,
    ) -> None:
        if not site_id.strip():
            raise ValueError("site_id is required")
        if sum(x is not None for x in (endpoint, kafka, transport)) != 1:
            raise ValueError("give exactly one of endpoint= (with write_key=), kafka=, transport=")
        if endpoint is not None and not write_key:
            raise ValueError("endpoint= needs write_key=")
        if batch_size < 1 or max_queue < 1 or max_retries < 0 or flush_interval_s <= 0:
            raise ValueError("batch_size, max_queue ≥ 1; max_retries ≥ 0; flush_interval_s > 0")
        if backoff_base_s < 0 or backoff_cap_s < backoff_base_s:
            raise ValueError("need 0 ≤ backoff_base_s ≤ backoff_cap_s")
        if kafka is not None:
            transport = KafkaTransport(kafka, topic=kafka_topic, timeout_s=timeout_s, clock=clock)
        elif endpoint is not None and write_key is not None:
            transport = HttpTransport(endpoint, write_key, timeout_s=timeout_s, clock=clock)
        if transport is None:  # unreachable after the checks above; keeps the type exact
            raise ValueError("no destination")
        # Stripped like Event.site_id, so deterministic ids match the site the event carries.
        self.site_id = site_id.strip()
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._clock = clock
        self._exit_timeout_s = exit_timeout_s
        self._sender = Sender(
            transport,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            max_queue=max_queue,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            on_rejected=on_rejected,
            rng=rng,
            sleep=sleep,
        )
        atexit.register(self._close_at_exit)

    # -- tracking ------------------------------------------------------------------------

    def track(
        self,
        type: EventType | str,
        *,
        anonymous_id: str | None = None,
        customer_id: str | None = None,
        occurred_at: datetime | None = None,
        order_id: str | None = None,
        revenue: Decimal | str | int | float | None = None,
        currency: str | None = None,
        lead: Mapping[str, object] | LeadInfo | None = None,
        manager_id: str | None = None,
        properties: Mapping[str, Scalar] | None = None,
        context: Mapping[str, object] | Context | None = None,
        event_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate and queue one event; return its ``event_id``. Never blocks on I/O.

        ``occurred_at`` defaults to now (tz-aware UTC; a naive datetime is invalid). The id is
        ``event_id`` if given, else :func:`event_id_for` of ``idempotency_key`` if given, else
        a random UUID. Raises :class:`InvalidEvent`, :class:`QueueFull`, :class:`ClientClosed`.
        """
        if idempotency_key is not None:
            if event_id is not None:
                raise _invalid("event_id", "give event_id or idempotency_key, not both", "conflict")
            if not idempotency_key:
                raise _invalid("idempotency_key", "must not be empty", "missing")
            event_id = event_id_for(self.site_id, idempotency_key)
        data: dict[str, object] = {
            "event_id": event_id or random_event_id(),
            "type": type,
            "site_id": self.site_id,
            "occurred_at": occurred_at if occurred_at is not None else self._clock(),
        }
        optional: dict[str, object | None] = {
            "anonymous_id": anonymous_id,
            "customer_id": customer_id,
            "order_id": order_id,
            "revenue": revenue,
            "currency": currency,
            "lead": lead,
            "manager_id": manager_id,
            "properties": dict(properties) if properties is not None else None,
            "context": context,
        }
        data.update((k, v) for k, v in optional.items() if v is not None)
        event = parse_event(data)
        self._sender.put(event)
        return event.event_id

    def lead(
        self, *, form: str | None = None, intent: str | None = None, **fields: Unpack[EventFields]
    ) -> str:
        """A ``lead`` (e.g. from a CRM): ``intent`` is ``info``, ``consultation``, ``purchase``…"""
        info = {k: v for k, v in (("form", form), ("intent", intent)) if v is not None}
        return self.track(EventType.LEAD, lead=info or None, **fields)

    def order(self, order_id: str, **fields: Unpack[EventFields]) -> str:
        """An ``order`` placed (not yet paid). Suggested key: ``idempotency_key=f"order:{id}"``."""
        return self.track(EventType.ORDER, order_id=order_id, **fields)

    def payment(self, order_id: str, **fields: Unpack[EventFields]) -> str:
        """A ``payment`` for an order. Key it by the payment, e.g. ``f"payment:{payment_id}"``."""
        return self.track(EventType.PAYMENT, order_id=order_id, **fields)

    def repeat(self, order_id: str, **fields: Unpack[EventFields]) -> str:
        """A ``repeat`` purchase by a returning customer."""
        return self.track(EventType.REPEAT, order_id=order_id, **fields)

    # -- flushing and closing ------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now; block until each of those events is settled.

        Settled: delivered, rejected, or held after a retry cycle that failed since this call
        began (``failed``). Resumes a sender paused after a failed cycle. With ``timeout``
        (seconds) it returns by then (``timed_out``). Not callable from ``on_rejected``.
        """
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = None) -> FlushResult:
        """Flush, then stop the sender thread and the transport. Idempotent.

        Events still held afterwards (destination down) are logged and kept in
        :meth:`undelivered`; ``timeout`` bounds the flush and the wait for the thread.
        """
        result = self._sender.close(timeout)
        atexit.unregister(self._close_at_exit)
        if held := self.undelivered():
            log.error("closed with %d undelivered events (see undelivered())", len(held))
        return result

    def undelivered(self) -> list[Event]:
        """The events held now (queued, in flight, or kept after failed retries)."""
        return self._sender.undelivered()

    @property
    def stats(self) -> ClientStats:
        return self._sender.stats()

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based): full jitter, at least ``retry_after``.

        ``rng() * min(backoff_cap_s, backoff_base_s * 2**attempt)``.
        """
        return self._sender.backoff_delay(attempt, retry_after)

    def __enter__(self) -> FunnelClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _close_at_exit(self) -> None:
        self.close(self._exit_timeout_s)
