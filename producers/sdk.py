"""The Python SDK for back ends: orders, payments, repeat purchases and CRM leads.

::

    with FunnelClient(endpoint="https://collect.example", write_key=KEY, site_id="shop") as fc:
        fc.order("ord-1", customer_id="c-42", revenue="99.90", currency="EUR",
                 idempotency_key="order:ord-1")

Contract
--------
* :meth:`FunnelClient.track` validates the event (bad input raises
  :class:`~funnel.events.InvalidEvent`: it is the caller's bug), fixes its ``event_id`` and
  queues it. It never waits for the network; it raises :class:`QueueFull` when ``max_queue``
  events are held, and never drops one silently. Every method is thread-safe.
* One background thread sends batches of up to ``batch_size`` events, one batch at a time in
  ``track`` order, at the latest ``flush_interval_s`` after an event was queued.
* Delivery is **at-least-once with stable ids**: an event's id is made once, at ``track``
  time, and every retry re-sends the same id; the pipeline deduplicates by ``event_id``. With
  ``idempotency_key=`` the id is deterministic (:func:`event_id_for`), so a back end that
  re-sends the same business fact after its own crash produces the same id as well.
* Each event ends in one of three states. **Delivered**: the collector answered 2xx (or the
  broker acknowledged it): it is durable. **Rejected**: refused for good (invalid, bad write
  key, other 4xx); reported in :attr:`FlushResult.rejected`, counted, passed to
  ``on_rejected``, logged, never retried. **Held**: 503/429/5xx/network errors retry the batch
  with exponential backoff and full jitter, honouring ``Retry-After``. After ``max_retries``
  consecutive failed retries the sender gives up *for now*: it keeps every held event, reports
  them in :attr:`FlushResult.failed`, pauses for ``backoff_cap_s`` and then tries again (a
  :meth:`~FunnelClient.flush` resumes at once). A 413 splits the batch in halves.
* :meth:`FunnelClient.flush` blocks until every event tracked before the call is delivered or
  rejected, or a retry cycle failed after the call began (then they are ``failed``), or the
  timeout passed. :meth:`FunnelClient.close` flushes, then stops the thread; events still held
  after it are in :meth:`FunnelClient.undelivered` (and logged). An unclosed client is closed
  at interpreter exit.

Money: pass ``revenue`` as :class:`~decimal.Decimal` or a string; a float works only when it
has at most four decimal places (``0.1 + 0.2`` does not).

Exceptions::

    ValueError
     └── InvalidEvent (funnel.events)   track: the event is invalid; .errors names the fields
    QueueFull                           track: max_queue events held; back off and retry
    RuntimeError
     └── ClientClosed                   track after close
"""

from __future__ import annotations

import atexit
import email.utils
import gzip
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.message import Message
from types import TracebackType
from typing import Any, Protocol, TypedDict, Unpack

from funnel.events import Context, Event, EventType, InvalidEvent, LeadInfo, parse_event

__all__ = [
    "EVENT_ID_NAMESPACE",
    "ClientClosed",
    "ClientStats",
    "Delivered",
    "EventFields",
    "FlushResult",
    "FunnelClient",
    "HttpTransport",
    "InvalidEvent",
    "KafkaTransport",
    "QueueFull",
    "Refused",
    "RejectedEvent",
    "Retry",
    "SendResult",
    "TooLarge",
    "Transport",
    "event_id_for",
]

log = logging.getLogger(__name__)

#: Namespace of deterministic event ids. Fixed forever: changing it changes every such id.
EVENT_ID_NAMESPACE = uuid.UUID("5b0f3c1e-8d0a-5e7c-9a43-6f2d1c0b9e57")

_MAX_RETRY_AFTER_S = 600.0  # a broken Retry-After must not wedge the sender for days
_USER_AGENT = "funnel-sdk-python/0.1"

Errors = tuple[dict[str, str], ...]
Scalar = str | int | float | bool | None


def event_id_for(site_id: str, idempotency_key: str) -> str:
    """The deterministic event id of a business fact: ``uuid5(NAMESPACE, "site:key")``.

    Any sender (another service, a CRM export) computing it the same way gets the same id.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{site_id}:{idempotency_key}"))


class QueueFull(Exception):
    """``max_queue`` events are held (the destination is slow or down); nothing was queued."""


class ClientClosed(RuntimeError):
    """The client was closed; it takes no more events."""


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the destination refused for good, with machine-readable reasons.

    ``event`` is the refused event itself (e.g. for a local dead-letter file); it takes no
    part in equality.
    """

    event_id: str
    errors: Errors
    event: Event | None = field(default=None, compare=False, repr=False)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.get("code", "invalid") for e in self.errors)


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What happened since the previous result (each outcome is reported by one result).

    ``failed`` lists the ids of events tracked before the flush that are still held (kept and
    retried later); ``timed_out`` says the flush returned at its timeout rather than after a
    failed retry cycle. ``rejected`` keeps at most ``max_queue`` unreported rejections (older
    ones were still counted, logged and passed to ``on_rejected``).
    """

    delivered: int = 0
    rejected: tuple[RejectedEvent, ...] = ()
    failed: tuple[str, ...] = ()
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Every event was delivered."""
        return not self.rejected and not self.failed


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters since the client started, and the events held now."""

    tracked: int
    delivered: int
    rejected: int
    retries: int
    failed_cycles: int
    held: int


# --- transports: one batch in, one verdict out -------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    """The batch was answered: listed indexes are refused for good, the rest are durable."""

    rejected: Mapping[int, Errors] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retry:
    """Not stored; send again. ``indexes`` (when given) are the only ones not durable."""

    reason: str
    retry_after: float | None = None
    indexes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class TooLarge:
    """The batch is too large for the destination: split it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The whole batch is refused for good (e.g. a bad write key)."""

    code: str
    reason: str


SendResult = Delivered | Retry | TooLarge | Refused


class Transport(Protocol):
    """Sends one batch and says what became of it. Called from the sender thread only."""

    def send(self, events: Sequence[Event]) -> SendResult: ...

    def close(self) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST would lose its body (urllib turns it into a GET): fail loudly instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpTransport:
    """``POST {endpoint}/v1/batch``: gzip-compressed JSON, key in ``X-Funnel-Key``.

    Each attempt stamps ``sent_at`` so the collector can correct the sender's clock skew.
    Blocks for at most ``timeout_s`` per request (connect and each read).
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/v1/batch"
        self.timeout_s = timeout_s
        self._write_key = write_key
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())

    def send(self, events: Sequence[Event]) -> SendResult:
        sent_at = self._clock().isoformat()
        items = [
            {
                **e.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
                "sent_at": sent_at,
            }
            for e in events
        ]
        body = gzip.compress(json.dumps(items, separators=(",", ":")).encode(), compresslevel=6)
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "X-Funnel-Key": self._write_key,
                "User-Agent": _USER_AGENT,
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return _verdict(response.status, response.headers, response.read(), len(events))
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    answer = exc.read()
                except (OSError, http.client.HTTPException):
                    answer = b""
                return _verdict(exc.code, exc.headers, answer, len(events))
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            return Retry(f"network error: {exc}")

    def close(self) -> None:
        return None


def _verdict(status: int, headers: Message, body: bytes, n: int) -> SendResult:
    """Map a collector answer to a verdict (see ``producers/collector/app.py``)."""
    payload = _json_object(body)
    message = str(payload.get("message") or f"HTTP {status}")
    summary = f"HTTP {status}" if message == f"HTTP {status}" else f"HTTP {status}: {message}"
    if 200 <= status < 300:
        rejected = _rejections(payload, n)
        accepted = payload.get("accepted")
        if isinstance(accepted, int) and accepted + len(rejected) != n:
            log.warning(
                "collector answered %d accepted + %d rejected of %d", accepted, len(rejected), n
            )
        return Delivered(rejected)
    if status == 400 and isinstance(payload.get("rejected"), list):
        listed = _rejections(payload, n)
        whole: Errors = ({"field": "$", "reason": "the batch was refused", "code": "rejected"},)
        return Delivered({i: listed.get(i, whole) for i in range(n)})
    if status == 400 and payload.get("error") == "batch_too_long":
        return TooLarge(message)
    if status == 413:
        return TooLarge(message)
    if status in (401, 403):
        return Refused("unauthorized", message)
    if status in (408, 425, 429) or status >= 500:
        return Retry(summary, _retry_after(headers.get("Retry-After")))
    return Refused(str(payload.get("error") or f"http_{status}"), message)


def _json_object(body: bytes) -> dict[str, object]:
    try:
        payload = json.loads(body) if body else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _rejections(payload: Mapping[str, object], n: int) -> dict[int, Errors]:
    found: dict[int, Errors] = {}
    items = payload.get("rejected")
    for item in items if isinstance(items, list) else ():
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < n:
            continue
        errors = item.get("errors")
        found[index] = tuple(
            {str(k): str(v) for k, v in e.items()}
            for e in (errors if isinstance(errors, list) else ())
            if isinstance(e, dict)
        ) or ({"field": "$", "reason": "rejected", "code": "rejected"},)
    return found


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, (when - _utc_now()).total_seconds()), _MAX_RETRY_AFTER_S)


class KafkaTransport:
    """Produce to the events topic with :class:`~producers.kafka_producer.EventProducer`.

    Delivered means the broker acknowledged (``acks=all``); a record that failed or was not
    acknowledged within ``timeout_s`` is retried (only those records). The producer is made
    on first use, so a client starts even while the broker is down.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_s = timeout_s
        self._clock = clock
        self._producer: Any = None  # EventProducer, imported lazily: Kafka stays optional

    def _connect(self) -> Any:
        if self._producer is None:
            from producers.kafka_producer import EventProducer

            if self.topic is None:
                self._producer = EventProducer(self.bootstrap_servers)
            else:
                self._producer = EventProducer(self.bootstrap_servers, self.topic)
        return self._producer

    def send(self, events: Sequence[Event]) -> SendResult:
        try:
            producer = self._connect()
        except Exception as exc:  # NoBrokersAvailable and kin: the broker is not there yet
            return Retry(f"cannot connect to Kafka: {exc}")
        update = {"sent_at": self._clock()}
        futures: list[tuple[int, Any]] = []
        failed: list[int] = []
        reason = ""
        for i, event in enumerate(events):
            try:
                futures.append((i, producer.send(event.model_copy(update=update))))
            except Exception as exc:
                failed.append(i)
                reason = str(exc)
        deadline = time.monotonic() + self.timeout_s
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


# --- the client ---------------------------------------------------------------------------


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


@dataclass(slots=True)
class _Held:
    seq: int
    event: Event
    queued_at: float


class FunnelClient:
    """Tracks back-end events and delivers them in the background (see the module docstring).

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
        clock: Callable[[], datetime] = _utc_now,
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
        self._transport = transport
        self._on_rejected = on_rejected
        self._rng = rng or random.random
        self._abort = threading.Event()
        self._sleep = sleep or self._abort.wait
        self._clock = clock
        self._exit_timeout_s = exit_timeout_s

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the sender waits for events
        self._settled = threading.Condition(self._lock)  # flushes wait for outcomes
        self._queue: deque[_Held] = deque()  # ascending seq (re-queued events go in front)
        self._inflight: dict[int, _Held] = {}  # the batch the sender is working on, by seq
        self._next_seq = 0
        self._batch_limit = batch_size  # lowered after a 413
        self._flush_through = -1  # send at once every event with seq ≤ this
        self._paused_until: float | None = None
        self._closed = False
        self._stop = False
        self._unreported_delivered = 0
        self._unreported_rejected: deque[RejectedEvent] = deque(maxlen=max_queue)
        self._tracked = self._delivered = self._rejected = self._retries = self._cycles = 0

        self._thread = threading.Thread(target=self._run, name="funnel-sdk-sender", daemon=True)
        self._thread.start()
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
                raise InvalidEvent(
                    [
                        {
                            "field": "event_id",
                            "reason": "give event_id or idempotency_key, not both",
                            "code": "conflict",
                        }
                    ]
                )
            if not idempotency_key:
                raise InvalidEvent(
                    [{"field": "idempotency_key", "reason": "must not be empty", "code": "missing"}]
                )
            event_id = event_id_for(self.site_id, idempotency_key)
        data: dict[str, object] = {
            "event_id": event_id or str(uuid.uuid4()),
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
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            if len(self._queue) + len(self._inflight) >= self.max_queue:
                raise QueueFull(f"{self.max_queue} events are waiting for delivery")
            self._queue.append(_Held(self._next_seq, event, time.monotonic()))
            self._next_seq += 1
            self._tracked += 1
            if len(self._queue) == 1 or len(self._queue) >= self._batch_limit:
                self._work.notify()
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
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() called from the sender thread (on_rejected?)")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._next_seq - 1
            cycles = self._cycles
            self._flush_through = max(self._flush_through, target)
            self._paused_until = None
            self._work.notify()
            timed_out = False
            while not self._settled_through(target) and self._cycles == cycles:
                if not self._thread.is_alive():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    break
                self._settled.wait(remaining)
            return self._report(target, timed_out)

    def close(self, timeout: float | None = None) -> FlushResult:
        """Flush, then stop the sender thread and the transport. Idempotent.

        Events still held afterwards (destination down) are logged and kept in
        :meth:`undelivered`; ``timeout`` bounds the flush and the wait for the thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
        result = self.flush(timeout)
        with self._lock:
            self._stop = True
            self._work.notify()
        self._abort.set()  # cut short a backoff sleep when the flush timed out
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        atexit.unregister(self._close_at_exit)
        if self._thread.is_alive():
            log.error("the sender thread did not stop within the timeout")
        else:
            self._transport.close()
        if held := self.undelivered():
            log.error("closed with %d undelivered events (see undelivered())", len(held))
        return result

    def undelivered(self) -> list[Event]:
        """The events held now (queued, in flight, or kept after failed retries)."""
        with self._lock:
            return [h.event for h in self._inflight.values()] + [h.event for h in self._queue]

    @property
    def stats(self) -> ClientStats:
        with self._lock:
            return ClientStats(
                tracked=self._tracked,
                delivered=self._delivered,
                rejected=self._rejected,
                retries=self._retries,
                failed_cycles=self._cycles,
                held=len(self._queue) + len(self._inflight),
            )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based): full jitter, at least ``retry_after``.

        ``rng() * min(backoff_cap_s, backoff_base_s * 2**attempt)``.
        """
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(attempt, 64))
        delay = self._rng() * ceiling
        return delay if retry_after is None else max(delay, retry_after)

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

    # -- under the lock ------------------------------------------------------------------

    def _settled_through(self, target: int) -> bool:
        # The queue is in ascending seq order, so its head is its oldest event.
        if self._queue and self._queue[0].seq <= target:
            return False
        return all(seq > target for seq in self._inflight)

    def _report(self, target: int, timed_out: bool) -> FlushResult:
        held = [*self._inflight.values(), *self._queue]
        result = FlushResult(
            delivered=self._unreported_delivered,
            rejected=tuple(self._unreported_rejected),
            failed=tuple(h.event.event_id for h in held if h.seq <= target),
            timed_out=timed_out,
        )
        self._unreported_delivered = 0
        self._unreported_rejected.clear()
        return result

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._deliver(batch)

    def _next_batch(self) -> list[_Held] | None:
        """Block until a batch is due (full, flushed, or its oldest event waited long enough)."""
        with self._lock:
            while not self._stop:
                now = time.monotonic()
                if self._paused_until is not None and now < self._paused_until:
                    self._work.wait(self._paused_until - now)
                    continue
                self._paused_until = None
                if not self._queue:
                    self._work.wait()
                    continue
                head = self._queue[0]
                due = head.queued_at + self.flush_interval_s
                if (
                    len(self._queue) >= self._batch_limit
                    or head.seq <= self._flush_through
                    or now >= due
                ):
                    size = min(self._batch_limit, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(size)]
                    self._inflight.update((h.seq, h) for h in batch)
                    return batch
                self._work.wait(due - now)
            return None

    def _deliver(self, batch: list[_Held]) -> None:
        """Send ``batch`` until every event in it is settled, or give up this cycle."""
        work: deque[list[_Held]] = deque([batch])
        failures = 0  # consecutive failed attempts; any answer resets it
        while work:
            part = work[0]
            verdict = self._send(part)
            if isinstance(verdict, Delivered):
                work.popleft()
                failures = 0
                self._settle(part, verdict.rejected)
            elif isinstance(verdict, Refused):
                work.popleft()
                failures = 0
                log.error(
                    "the destination refused %d events for good: %s (%s)",
                    len(part),
                    verdict.reason,
                    verdict.code,
                )
                error = {"field": "$", "reason": verdict.reason, "code": verdict.code}
                self._settle(part, dict.fromkeys(range(len(part)), (error,)))
            elif isinstance(verdict, TooLarge):
                work.popleft()
                if len(part) == 1:
                    error = {"field": "$", "reason": verdict.reason, "code": "too_large"}
                    self._settle(part, {0: (error,)})
                    continue
                half = len(part) // 2
                work.extendleft([part[half:], part[:half]])
                with self._lock:
                    self._batch_limit = min(self._batch_limit, half)
            else:
                if verdict.indexes is not None:
                    pending = set(verdict.indexes)
                    self._settle([h for i, h in enumerate(part) if i not in pending], {})
                    part = [h for i, h in enumerate(part) if i in pending]
                    if not part:
                        work.popleft()
                        continue
                    work[0] = part
                if failures >= self.max_retries:
                    self._requeue(work, gave_up=verdict.reason, attempts=failures + 1)
                    return
                delay = self.backoff_delay(failures, verdict.retry_after)
                failures += 1
                with self._lock:
                    self._retries += 1
                log.warning("retrying %d events in %.2f s: %s", len(part), delay, verdict.reason)
                self._sleep(delay)
                if self._abort.is_set():
                    self._requeue(work)
                    return

    def _send(self, part: list[_Held]) -> SendResult:
        try:
            return self._transport.send([h.event for h in part])
        except Exception as exc:  # a transport must not kill the sender: keep and retry
            log.exception("transport failed")
            return Retry(f"transport error: {exc!r}")

    def _settle(self, part: list[_Held], rejected: Mapping[int, Errors]) -> None:
        """Mark ``part`` delivered except the ``rejected`` indexes.

        ``on_rejected`` runs first, so a flush that sees these events settled also knows
        their callbacks have run.
        """
        refused = [
            RejectedEvent(part[i].event.event_id, errors, part[i].event)
            for i, errors in sorted(rejected.items())
        ]
        for rejection in refused:
            log.warning("event %s rejected: %s", rejection.event_id, ", ".join(rejection.codes))
            if self._on_rejected is not None:
                try:
                    self._on_rejected(rejection)
                except Exception:
                    log.exception("on_rejected failed for event %s", rejection.event_id)
        with self._lock:
            for held in part:
                del self._inflight[held.seq]
            self._delivered += len(part) - len(refused)
            self._unreported_delivered += len(part) - len(refused)
            self._rejected += len(refused)
            self._unreported_rejected.extend(refused)
            self._settled.notify_all()

    def _requeue(
        self, work: deque[list[_Held]], *, gave_up: str | None = None, attempts: int = 0
    ) -> None:
        """Put unsettled events back at the head of the queue; with ``gave_up``, end the cycle."""
        rest = [held for part in work for held in part]
        with self._lock:
            for held in rest:
                del self._inflight[held.seq]
            self._queue.extendleft(reversed(rest))
            if gave_up is not None:
                self._cycles += 1
                self._paused_until = time.monotonic() + self.backoff_cap_s
                self._flush_through = -1
            held_now = len(self._queue)
            self._settled.notify_all()
        if gave_up is not None:
            log.error(
                "gave up after %d attempts (%s); keeping %d events, trying again in %.0f s",
                attempts,
                gave_up,
                held_now,
                self.backoff_cap_s,
            )
