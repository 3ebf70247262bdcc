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

from funnel.events import InvalidEvent
from producers.sdk._client import EventFields, FunnelClient, Scalar
from producers.sdk._exceptions import ClientClosed, QueueFull
from producers.sdk._http import HttpTransport
from producers.sdk._ids import EVENT_ID_NAMESPACE, event_id_for
from producers.sdk._kafka import KafkaTransport
from producers.sdk._results import ClientStats, FlushResult, RejectedEvent
from producers.sdk._transport import (
    Delivered,
    Errors,
    Refused,
    Retry,
    SendResult,
    TooLarge,
    Transport,
)

__all__ = [
    "EVENT_ID_NAMESPACE",
    "ClientClosed",
    "ClientStats",
    "Delivered",
    "Errors",
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
    "Scalar",
    "SendResult",
    "TooLarge",
    "Transport",
    "event_id_for",
]
