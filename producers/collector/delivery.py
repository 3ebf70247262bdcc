"""Where accepted events go, and what "acknowledged" means for each destination.

* :class:`KafkaDelivery` — produced with librdkafka (``acks=all``, idempotent, key
  ``site_id:person``): one record per key and request, holding that key's events (one JSON
  object, or a JSON array of several, DESIGN §4); :meth:`deliver` returns once the broker
  acknowledged every record.
* :class:`EmbeddedDelivery` — group commit into the embedded pipeline and store: concurrent
  requests are committed together; :meth:`deliver` returns once their facts are in the store.

Both raise :class:`Unavailable` when the destination cannot take events now; the collector
then answers 503 with ``Retry-After`` and nothing is acknowledged.

Rejected items go to the dead-letter path (:meth:`dead_letter`): the rejected topic, or the
``rejected_events`` table. A failing dead-letter write is logged and counted by the caller,
never turned into an acknowledgement of the rejected items.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pydantic import TypeAdapter

from funnel.events import Event
from funnel.intake import Rejection
from producers.record_producer import RecordProducer, SendRefused
from storage.backends import StoreError
from stream_processors.embedded import EmbeddedPipeline

__all__ = ["Delivery", "EmbeddedDelivery", "KafkaDelivery", "Receipt", "Unavailable"]

log = logging.getLogger(__name__)

_EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
RECORD_BYTES = 512 * 1024
"""A record's events stop here (well under the producer's and broker's 1 MB limit)."""


def event_records(events: list[Event]) -> list[tuple[bytes, bytes]]:
    """The ``events`` topic's records for one request: per person key (in the order of its
    first event), that key's events in order, one JSON object or an array of several, each
    array at most :data:`RECORD_BYTES` (a larger group goes as several records)."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.partition_key, []).append(event)
    records = []
    for key, group in groups.items():
        raw = key.encode()
        if len(group) == 1:
            records.append((raw, group[0].model_dump_json(exclude_none=True).encode()))
            continue
        value = _EVENTS.dump_json(group, exclude_none=True)  # one pass, in Rust
        if len(value) <= RECORD_BYTES:
            records.append((raw, value))
            continue
        middle = len(group) // 2
        records += event_records(group[:middle]) + event_records(group[middle:])
    return records


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of delivered events, beyond "durable" (see :meth:`Delivery.deliver`)."""

    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    """Event id → its error, for an event refused after validation (dead-lettered, not
    stored): the store refused a value that slipped past the edge (``store_refused``), or
    the processing raised on it (``runtime_error``). Empty otherwise."""
    duplicates: int = 0
    """Events that were already stored (a retry, or the id under another person): taken,
    stored once. Known in embedded mode; the stream drops them later in Kafka mode."""


class Unavailable(Exception):
    """The destination cannot take events now; retry later."""


class Delivery(Protocol):
    async def start(self) -> None: ...

    async def deliver(self, events: list[Event]) -> Receipt:
        """Return once ``events`` are durable; raise :class:`Unavailable` otherwise."""

    async def dead_letter(self, rejections: list[Rejection], received_at: datetime) -> None:
        """Record rejected items with their reasons (best effort, may raise)."""

    async def close(self) -> None: ...

    def problem(self) -> str | None:
        """Why events cannot be taken now (``/health`` reports it), or ``None``."""


class KafkaDelivery:
    """Produce to Kafka; acknowledged means the broker acknowledged (``acks=all``).

    Records are queued from the event loop (librdkafka's ``produce`` does not block: a full
    queue is a 503) and each request awaits one future that the producer's delivery
    reports resolve when the last of its records is acknowledged. Many requests are in
    flight at once and share the producer's batches. A producer that failed for good (an
    idempotence failure) answers 503 and ``/health`` says so until the collector restarts.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        events_topic: str = "funnel.events",
        rejected_topic: str = "funnel.rejected",
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.events_topic = events_topic
        self.rejected_topic = rejected_topic
        self.ack_timeout_s = ack_timeout_s
        # librdkafka, not kafka-python: the producer's cost per record bounds the collector
        # (producers.record_producer says why, with the measurement).
        self._producer = RecordProducer(
            bootstrap_servers,
            ack_timeout_s=ack_timeout_s,
            linger_ms=2,
            client_id="funnel-collector",
        )

    async def start(self) -> None:
        for topic in (self.events_topic, self.rejected_topic):
            with contextlib.suppress(SendRefused):  # a broker down now is a 503 later
                await asyncio.to_thread(self._producer.partitions_for, topic)

    async def _send(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if not acked.done():
                if error is None:
                    acked.set_result(None)
                else:
                    acked.set_exception(Unavailable(f"Kafka did not acknowledge: {error}"))

        def done(error: BaseException | None) -> None:  # on the producer's I/O thread
            loop.call_soon_threadsafe(settle, error)

        try:
            self._producer.send_all(records, done, topic=topic)
        except SendRefused as exc:
            raise Unavailable(f"Kafka did not take the events: {exc}") from exc
        del records
        # The producer fails a record at the latest ack_timeout_s after it was queued; a
        # timer on the future bounds the wait anyway (asyncio.wait_for would add a second
        # future and its callbacks to every request).

        def too_late() -> None:
            if not acked.done():
                acked.set_exception(Unavailable("Kafka did not acknowledge in time"))

        timer = loop.call_later(self.ack_timeout_s + 1, too_late)
        try:
            await acked
        finally:
            timer.cancel()

    async def deliver(self, events: list[Event]) -> Receipt:
        # One record per person key: the cost of a Kafka record (here and in every stage
        # that reads it) is per record, not per byte.
        await self._send(self.events_topic, event_records(events))
        return Receipt()  # the sink dead-letters what the store refuses (storage.poison)

    async def dead_letter(self, rejections: list[Rejection], received_at: datetime) -> None:
        at = received_at
        records = [
            (r.site_id.encode(), json.dumps(r.row(at), default=str).encode()) for r in rejections
        ]
        await self._send(self.rejected_topic, records)

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.close, 5)

    def problem(self) -> str | None:
        fatal = getattr(self._producer, "fatal", None)
        return None if fatal is None else f"the Kafka producer failed for good: {fatal}"


class EmbeddedDelivery:
    """Group commit into the embedded pipeline: one store commit serves many requests.

    Requests queue their events and wait; a single committer takes everything queued,
    runs it through the pipeline, flushes the facts to the store, then releases every
    waiting request at once. A failed commit fails every request in it (503).

    The committer is also the embedded status timer: every ``status_every_s`` (between
    groups under steady traffic, or when idle) it lets the pipeline turn expired conversion
    windows into ``dropped`` and cool leads. If the committer itself fails (a bug, not the
    store), the requests it holds get 503, :meth:`problem` says why (``/health`` answers 503)
    until a commit succeeds again, and the committer starts over.
    """

    def __init__(self, pipeline: EmbeddedPipeline, *, status_every_s: float = 30.0) -> None:
        self.pipeline = pipeline
        self.status_every_s = status_every_s
        self._pending: list[tuple[list[Event], asyncio.Future[Receipt]]] = []
        self._group: list[tuple[list[Event], asyncio.Future[Receipt]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._problem: str | None = None
        self.commits = 0
        self.timer_runs = 0
        self.committer_failures = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._committer(), name="funnel-group-commit")

    async def deliver(self, events: list[Event]) -> Receipt:
        if self._task is None or self._task.done():
            raise Unavailable("the embedded committer is not running")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        self._wakeup.set()
        return await future

    def problem(self) -> str | None:
        return self._problem

    async def _committer(self) -> None:
        loop = asyncio.get_running_loop()
        timer_at = loop.time() + self.status_every_s
        while True:
            try:
                if loop.time() >= timer_at:
                    timer_at = loop.time() + self.status_every_s
                    await self._run_timer()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), max(0.0, timer_at - loop.time()))
                await self._commit_group()
            except Exception as exc:  # a bug: answer who waits, say so, start over
                self.committer_failures += 1
                self._problem = f"embedded committer failed: {type(exc).__name__}: {exc}"
                log.exception("the embedded committer failed; it starts over")
                group, self._group = self._group, []
                for _, future in group:
                    if not future.done():
                        future.set_exception(Unavailable(self._problem))

    async def _run_timer(self) -> None:
        try:
            await asyncio.to_thread(self._expire)
            self.timer_runs += 1
        except (StoreError, OSError) as exc:  # the next round tries again
            log.warning("embedded status timer failed: %s", exc)

    async def _commit_group(self) -> None:
        self._wakeup.clear()
        self._group, self._pending = self._pending, []
        group = self._group
        if not group:
            return
        try:
            applied, refused = await asyncio.to_thread(
                self._commit, [e for events, _ in group for e in events]
            )
        except (StoreError, OSError) as exc:
            log.warning("embedded commit failed: %s", exc)
            self._group = []
            for _, future in group:
                if not future.done():
                    future.set_exception(Unavailable(f"store unavailable: {exc}"))
            return
        self._group = []
        self.commits += 1
        self._problem = None
        at = 0
        for events, future in group:
            mine = applied[at : at + len(events)]
            at += len(events)
            # Not applied: a duplicate, unless refused (a poison event, answered so).
            pairs = zip(events, mine, strict=True)
            duplicates = sum(not done and e.event_id not in refused for e, done in pairs)
            if not future.done():
                future.set_result(
                    Receipt(
                        {e.event_id: refused[e.event_id] for e in events if e.event_id in refused}
                        if refused
                        else {},
                        duplicates,
                    )
                )

    def _commit(self, events: list[Event]) -> tuple[list[bool], dict[str, dict[str, str]]]:
        """Apply and flush ``events``: whether each was applied (not a duplicate), and the
        events refused after validation (:attr:`Receipt.refused`)."""
        applied = [self.pipeline.submit(event) for event in events]
        refused = self.pipeline.flush()
        errors = {str(r.row.get("event_id")): r.error for r in refused if r.table == "events"}
        return applied, errors

    def _expire(self) -> None:
        self.pipeline.expire()
        self.pipeline.flush()

    async def dead_letter(self, rejections: list[Rejection], received_at: datetime) -> None:
        rows = [r.row(received_at) for r in rejections]
        await asyncio.to_thread(self.pipeline.store.insert, "rejected_events", rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def utc_now() -> datetime:
    return datetime.now(UTC)
