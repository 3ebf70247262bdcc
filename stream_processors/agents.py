"""The stream agents: read state, call the core, write state, send. Nothing else lives here.

Two stages, because a person's events arrive keyed by device (or by customer for back-end
events) and a device can turn out to belong to a customer whose state lives on another
partition (DESIGN §2, issue 4):

1. ``route`` reads the events topic. Per device it keeps the customer the device is linked
   to (table ``device-links``), resolves each event's person
   (:func:`funnel.identity.resolve`) and forwards it to the ``person-events`` topic, to the
   partition of its person. When an event creates a link it first sends the device's
   anonymous person a ``handover`` command. A batch's messages go as one ``batch`` record per
   partition (:data:`ROUTE_ITEMS` messages at most), each message keyed by its person: the
   cost of a Kafka stage is per record, not per byte.
2. ``persons`` reads ``person-events``. Per person it keeps the state (table
   ``person-state``) and applies events with :func:`funnel.processor.process`. On a
   ``handover`` the anonymous person sends its whole state (or none) to the customer's
   person as an ``absorb`` message and leaves a forwarding marker behind; on ``absorb`` the
   customer's person merges it (:func:`funnel.processor.merge`). The event that made the
   link carries ``after`` (the device): the customer's events are held until that answer is
   in, as the embedded runner merges before it applies the event (:data:`_HELD`). A batch's
   facts of the ``events``,
   ``stage_reached`` and ``attributions`` tables go as Arrow blocks (a few records per batch,
   :data:`BLOCK_ROWS` rows each); person rows and lead changes as one keyed JSON record each
   (their topics are public, DESIGN §9a).

Exactly once, from at-least-once delivery (DESIGN §9; Faust's ``exactly_once`` mode crashes on
rebalance, faust-streaming #323):

* Each stage works in batches and writes its tables only after the broker acknowledged every
  record the batch sent. A table (its changelog) therefore never runs ahead of the outputs:
  a crash loses state, never outputs whose inputs the state already counts. The worker keeps
  each input partition's commit position itself (:mod:`stream_processors.commits`): a batch
  takes a partition's records in offset order from it, and it moves past them once the
  batch's outputs are acknowledged and its state written; Faust commits that position. A
  batch that a rebalance overtakes is neither written nor counted, and goes again.
* What a crash leaves is replayed from the last committed offset, against state that is the
  same or older than at the first run, and the core is deterministic: replayed inputs already
  in the state are no-ops (event ids, hand-over markers, merged ids), and the others produce
  the very outputs they produced the first time.
* Every fact but a person row carries its **origin** (:mod:`storage.origin`): the
  person-events partition and offset of the record that caused it and its place among that
  record's facts; in a block as two columns, on a JSON record as a header. A replayed fact
  has the origin of its first copy, and the sink drops it (:class:`storage.sink.Sink`).
  Blocks go per origin partition (key ``block:<partition>``), so that one facts partition
  receives an origin partition's blocks, in order. Every fact also carries ``fact_id =
  "<partition>:<offset>[.<i>]:<n>"`` (the message's place in a ``batch`` record and its place
  among that message's facts); an ``events`` row's id is ``event:<site>:<event_id>`` instead,
  so an event id sent under two persons lands once.

A batch that cannot complete (an output the broker did not acknowledge, a bug, a stop in the
middle of it) ends the process with exit code 70 instead of going on: its offsets are then
never committed, and a restart replays it. Invalid events go to the rejected
topic with their reasons and a ``rejection_id`` (the input's position), by which a reader
of that topic recognises a copy re-sent after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import faust
from faust.types import EventT
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from funnel import metrics as series
from funnel.codec import (
    deadline_of,
    decode_state,
    encode_with_deadline,
    state_from_builtins,
    state_to_builtins,
)
from funnel.events import InvalidEvent, parse_event
from funnel.facts import EventRow, Fact, PersonRow
from funnel.identity import person_id_of, resolve
from funnel.intake import POISON, Rejection, runtime_error
from funnel.processor import CoreConfig, PersonState
from funnel.runtime import Batch
from funnel.serialization import dumps_row
from funnel.topics import FACT_TABLES, TopicNames
from storage import origin
from storage.fact_columns import fact_blocks
from stream_processors import commits
from stream_processors.topics import partition_of

__all__ = ["register"]

_MOVED = b"moved:"
_HELD = b"held:"
"""A person's value that carries, before the state, the events held for a device's history:
``held:``, the length of the entry's JSON (4 bytes, big-endian), the entry, the state (none
for a customer new to this partition). One value, so that a crash keeps both or neither."""
BATCH_SIZE = 500
"""Records per batch: one acknowledgement round trip per batch, not per record."""
BATCH_WAIT_S = 0.1
"""How long a batch waits to fill up."""
BLOCK_TABLES = frozenset({"events", "stage_reached", "attributions"})
"""The fact tables whose facts go as Arrow blocks (a few records per batch); those of
``lead_changes`` and ``persons`` stay one keyed JSON record each (public topics, DESIGN §9a)."""
BLOCK_ROWS = 1_000
"""Rows per block record (well under the producer's 1 MB request limit)."""
EXIT_BATCH_CUT_SHORT = 70
TICK_KEY = b"funnel:tick"
BATCH_KEY = b"funnel:batch"
"""The key of a person-events record that carries many persons' messages (sent to the
partition of their keys, each item keyed)."""
ERASE_KINDS = frozenset({"forget", "unlink"})
"""The person-events commands of ``funnel forget`` (:mod:`stream_processors.forget`)."""
ROUTE_ITEMS = 250
"""Messages per batch record at most (well under the producer's 1 MB request limit)."""
HOLD_LIMIT_S = 300.0
"""How long the person stage holds a person's events for a device's history at most (it
comes within a round trip; the limit is for a bug that loses it)."""
_ANSWERS_KEPT = 8
"""Absorbs that came before the event that waits for them, kept per person."""
MAX_DEAD_LETTER = 65_536
"""Characters of a payload kept in its dead-letter record."""
_REPORT_EVERY_S = 5.0

log = logging.getLogger(__name__)


def register(
    app: faust.App,
    names: TopicNames,
    config: CoreConfig,
    *,
    timer_interval_s: float = 30.0,
    hold_limit_s: float = HOLD_LIMIT_S,
) -> None:
    """Declare the topics and tables on ``app``; register both agents and the status timer."""
    events = app.topic(names.events, key_type=bytes, value_type=bytes)
    person_events = app.topic(names.person_events, key_type=bytes, value_type=bytes)
    rejected = app.topic(names.rejected, key_type=bytes, value_type=bytes)
    fact_topics = {
        t: app.topic(names.facts(t), key_type=bytes, value_type=bytes) for t in FACT_TABLES
    }
    table = partial(app.Table, default=None, key_type=bytes, value_type=bytes)
    links = table("device-links")
    persons = table("person-state")
    metrics = _Metrics()

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp takes the charset apart from the media type.
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    partitions = app.conf.topic_partitions  # of person-events, which the tables follow
    hold_ticks = max(1, math.ceil(hold_limit_s / timer_interval_s))
    """Ticks a person's events are held at most for a device's history (ticks are records:
    a replay counts the same, and a backlog does not count as waiting)."""

    async def send(
        topic: faust.TopicT,
        key: bytes,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """Queue one record; the returned awaitable resolves when the broker acknowledged it."""
        # Straight to the producer: records are bytes already, and Faust's send path (futures,
        # sensors, attachments) cost more than the record (benchmarks/bench_worker.py).
        return await app.producer.send(topic.get_topic_name(), key, value, partition, None, headers)

    async def send_person(key: str, message: dict[str, Any]) -> Awaitable[Any]:
        return await send(person_events, key.encode(), json.dumps(message).encode())

    def fact_record(fact: Fact, fact_id: str) -> tuple[faust.TopicT, bytes, bytes]:
        """Where a fact goes: its table's topic, keyed by its person (so that compacting the
        persons topic keeps every person's latest row)."""
        key = f"{fact.site_id}:{fact.person_id}".encode()
        value = dumps_row({**fact.row(), "fact_id": fact_id}).encode()
        return fact_topics[fact.table], key, value

    async def send_rejection(
        item: EventT[bytes],
        key: bytes | None,
        payload: dict[str, Any] | bytes,
        errors: list[dict[str, str]],
        rejection_id: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """The dead-letter record of ``payload`` (:meth:`funnel.intake.Rejection.row`, the
        same from every stage) with its ``rejection_id``, to the rejected topic."""
        site = (key or b"").decode("utf-8", "replace").partition(":")[0]
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
        text = text if text is not None else json.dumps(payload)
        at = datetime.fromtimestamp(item.message.timestamp, UTC)
        rejection = {
            **Rejection(item.message.offset, errors, text[:MAX_DEAD_LETTER], site).row(at),
            "rejection_id": rejection_id,
        }
        value = dumps_row(rejection).encode()
        return await send(rejected, key or b"", value, None, headers)

    async def send_poison(
        item: EventT[bytes],
        key: bytes | None,
        payload: dict[str, Any] | bytes,
        where: str,
        exc: Exception,
        what: str,
    ) -> Awaitable[Any]:
        """The route stage's poison (:data:`POISON`): logged, counted, dead-lettered."""
        log.error("%s raised on the event at %s", what, where, exc_info=exc)
        metrics.events.labels("poison").inc()
        return await send_rejection(item, key, payload, [runtime_error(exc)], where)

    async def route(stream: faust.StreamT[bytes]) -> None:
        async for batch in _batches(stream):
            taken = await _admitted(app, batch, metrics)
            if taken:
                with metrics.batch_seconds.labels("route").time():
                    await _complete_or_exit(route_batch(stream, taken))

    async def route_batch(stream: faust.StreamT[bytes], batch: Sequence[EventT[bytes]]) -> None:
        sent: list[Awaitable[Any]] = []
        writes = _TableTransaction(stream, metrics.replayed.labels("rebalance"))
        outgoing: dict[int, list[dict[str, Any]]] = {}  # person-events partition → messages

        def forward(key: str, message: dict[str, Any]) -> None:
            """Queue a message for the person ``key`` (sent with its partition's others)."""
            outgoing.setdefault(partition_of(key.encode(), partitions), []).append(
                {**message, "key": key}
            )

        arrivals = (
            (record, cast(bytes, record.key), payload, place)
            for record in batch
            for payload, place in _events_of(cast(bytes, record.value))
        )
        for item, key, payload, place in arrivals:
            # The collector's dead-letter record, plus the input's position (and the event's
            # place in an array): a copy re-sent after a crash has the same id.
            where = f"{item.message.partition}:{item.message.offset}{place}"
            try:
                event = parse_event(payload)
            except InvalidEvent as exc:
                sent.append(await send_rejection(item, key, payload, exc.errors, where))
                metrics.events.labels("rejected").inc()
                continue
            except Exception as exc:  # a bug's trigger: dead-lettered, the batch goes on
                sent.append(await send_poison(item, key, payload, where, exc, "validation"))
                continue
            # A client's retry goes on like any event: the person's state knows the ids it
            # applied (the runtime's dedup), wherever identity sends it, merges included.
            link_key = key or event.partition_key.encode()
            alias = writes.get_bytes(links, link_key, item) if event.anonymous_id else None
            try:
                who = resolve(event, alias.decode() if alias else None)
            except Exception as exc:  # a bug's trigger: dead-lettered, the batch goes on
                sent.append(await send_poison(item, key, payload, where, exc, "identity"))
                continue
            if who.link_from is not None:
                writes.put(links, link_key, who.key.encode(), item)
                handover = {"kind": "handover", "into": who.key, "person_id": who.person_id}
                forward(who.link_from, handover)
            message = {
                "kind": "event",
                "person_id": who.person_id,
                "event": payload,  # decoded once, forwarded as it came
            }
            if who.link_from is not None:
                # The device's history reaches the person by way of the device's partition
                # (the hand-over, then an absorb): the person stage holds this event, and the
                # person's next ones, until it has. The embedded runner merges before it
                # applies the event, and both hosts must land the same facts (DESIGN §9a).
                message["after"] = who.link_from
            forward(who.key, message)
        # One record per person-events partition (or a few, for a large batch), carrying its
        # messages in order: the per-record cost, not the events, bounds a Kafka stage.
        for partition, messages in sorted(outgoing.items()):
            for start in range(0, len(messages), ROUTE_ITEMS):
                items = messages[start : start + ROUTE_ITEMS]
                value = json.dumps({"kind": "batch", "items": items}).encode()
                sent.append(await send(person_events, BATCH_KEY, value, partition))
        await _acknowledged(sent)
        await changelogs_known(app)
        writes.commit(batch)

    async def advance_persons(stream: faust.StreamT[bytes]) -> None:
        async for batch in _batches(stream):
            taken = await _admitted(app, batch, metrics)
            if taken:
                with metrics.batch_seconds.labels("persons").time():
                    await _complete_or_exit(advance_isolating(stream, taken))

    async def advance_isolating(
        stream: faust.StreamT[bytes], batch: Sequence[EventT[bytes]]
    ) -> None:
        """:func:`advance_batch`, run again without each message the runtime raised on until
        the batch completes: a poison message (a bug's trigger) goes to the rejected topic
        with its reason, and the partition goes on instead of crash-looping on it.

        The runtime changes a person's state in place, so the batch that raised is dropped
        whole (nothing of it was written: its tables are written at its end) and runs again
        from the saved state, as a replay after a crash would: the records it had sent are
        sent again with the same ids and origins, and the sink drops them. Each run skips
        one more message, so a batch runs at most once per poison message in it."""
        poison: dict[str, str] = {}  # position → the runtime's error
        while True:
            try:
                await advance_batch(stream, batch, poison)
                return
            except _Poisoned as exc:
                log.error(
                    "the runtime raised on the message at %s (%s): it goes to the rejected "
                    "topic, and the batch runs again without it",
                    exc.position,
                    exc.reason,
                    exc_info=exc.__cause__,
                )
                poison[exc.position] = exc.reason
                metrics.replayed.labels("poison").inc(len(batch))

    async def advance_batch(
        stream: faust.StreamT[bytes], batch: Sequence[EventT[bytes]], poison: dict[str, str]
    ) -> None:
        """The person stage: a batch of the runtime (:class:`funnel.runtime.Batch`) over this
        partition's tables, fed the messages in order; its changes are written when every
        fact it sent is acknowledged. The messages at the positions in ``poison`` go to the
        rejected topic instead; a message the runtime raises on raises :class:`_Poisoned`."""
        sent: list[Awaitable[Any]] = []
        writes = _TableTransaction(stream, metrics.replayed.labels("rebalance"))
        reading: list[EventT[bytes]] = []  # the record whose partition a table read is for
        moved: dict[str, str] = {}  # handed over in this batch: person key → its new key
        last: dict[str, EventT[bytes]] = {}  # person key → the last record that changed it

        class Saved:
            """The runtime's view of the saved state: this partition's person table. The
            route stage resolved identity and dropped retries, so no links or ids here."""

            def person(self, key: str) -> PersonState | None:
                stored = writes.get(persons, key.encode(), reading[-1])
                if isinstance(stored, bytes) and not stored.startswith(_MOVED):
                    data = _state_of(stored)
                    return decode_state(data, config) if data else None
                return None

            def alias(self, device: str) -> str | None:
                return None

            def applied(self, event: str) -> bool:
                return False

        run = Batch(config, Saved())
        facts = run.changes.facts
        out = 0  # facts[:out] are sent (or kept for a block)
        origins = _Origins()
        # The facts of the block tables, sent as blocks at the end, per origin partition.
        blocked: dict[int, tuple[list[Fact], list[str], list[tuple[int, int]]]] = {}

        async def send_facts(position: str, item: EventT[bytes]) -> None:
            """Send the facts ``item`` made since the last call (those of the block tables
            are kept for :func:`send_blocks`); their ids are ``position:n``."""
            nonlocal out
            for n, fact in enumerate(facts[out:]):
                fact_id = fact_id_of(fact, f"{position}:{n}")
                if isinstance(fact, PersonRow):  # idempotent in its table: no origin
                    sent.append(await send(*fact_record(fact, fact_id)))
                    continue
                where = origins.next(item)
                if fact.table in BLOCK_TABLES:
                    kept = blocked.setdefault(where[0], ([], [], []))
                    kept[0].append(fact)
                    kept[1].append(fact_id)
                    kept[2].append(where)
                    continue
                headers = [origin.header(*where)]
                sent.append(await send(*fact_record(fact, fact_id), None, headers))
            out = len(facts)

        async def send_blocks() -> None:
            """The batch's facts of the block tables: per origin partition, a few records per
            table, each an Arrow block of at most :data:`BLOCK_ROWS` rows with their fact ids
            and origins."""
            for partition, (kept, ids, where) in sorted(blocked.items()):
                key = f"block:{partition}".encode()
                for table, value in block_records(kept, ids, where):
                    sent.append(await send(fact_topics[table], key, value))

        holds: dict[str, tuple[dict[str, Any] | None, EventT[bytes]]] = {}
        """The hold entries this batch changed (written with the persons' states)."""

        def held(key: str, item: EventT[bytes]) -> dict[str, Any] | None:
            if key in holds:
                return holds[key][0]
            stored = writes.get(persons, key.encode(), item)
            return _split_held(stored)[0] if isinstance(stored, bytes) else None

        def keep_held(key: str, entry: dict[str, Any] | None, item: EventT[bytes]) -> None:
            holds[key] = (entry if entry and (entry["for"] or entry["answered"]) else None, item)

        def hold(key: str, message: dict[str, Any], item: EventT[bytes]) -> bool:
            """Whether the event ``message`` of the person ``key`` is held: it waits for a
            device's history (its ``after``), or an earlier event of the person does. A copy
            delivered again (a replay) waits once, for the same device."""
            entry = held(key, item)
            after = message.get("after")
            if after is not None and (entry is None or after not in entry["for"]):
                if entry is not None and after in entry["answered"]:
                    entry["answered"].remove(after)  # its answer came first (a retried send)
                    keep_held(key, entry, item)
                elif not _settled(run.person(key), after, message):
                    entry = entry or _hold_entry()
                    entry["for"].append(after)
            if entry is None or not entry["for"]:
                return False
            if message not in entry["held"]:
                entry["held"].append(message)
                metrics.held.labels("held").inc()
            keep_held(key, entry, item)
            return True

        async def absorbed(
            key: str, message: dict[str, Any], position: str, item: EventT[bytes]
        ) -> None:
            """An absorb (a device's answer to its hand-over) for the person ``key``: the
            device's history is merged, and once no other answer is awaited the held events
            go on, in order. (Every awaited history is in before them: the route stage can
            deliver a person's events in another order than the collector took them, from
            two devices' partitions, and the embedded runner had merged each history before
            the events that followed its link.) An empty answer that came before the event
            that waits for it is remembered for it."""
            if message["state"] is not None:
                merge(key, message, position, item)
            device = message.get("from")
            if device is None:  # an answer of an earlier version: nothing waits for it
                return
            entry = held(key, item)
            if entry is not None and device in entry["for"]:
                entry["for"].remove(device)
                if not entry["for"]:
                    await release(key, entry, position, item)
                    entry = _hold_entry() | {"answered": entry["answered"]}
                keep_held(key, entry, item)
            elif message["state"] is None:
                entry = entry or _hold_entry()
                entry["answered"] = [*entry["answered"], device][-_ANSWERS_KEPT:]
                keep_held(key, entry, item)

        def merge(key: str, message: dict[str, Any], position: str, item: EventT[bytes]) -> None:
            """Merge the device's history an absorb ``message`` carries into ``key``."""
            try:
                other = state_from_builtins(message["state"], config)
                run.absorb(key, other, message["person_id"])
            except Exception as exc:  # the batch runs again without it (advance_isolating)
                raise _Poisoned(position, runtime_error(exc)["reason"]) from exc
            last[key] = item

        async def release(
            key: str, entry: dict[str, Any], position: str, item: EventT[bytes]
        ) -> None:
            """Apply the events ``entry`` held for ``key``, in order (``position/i``: their
            places)."""
            for i, message in enumerate(entry["held"]):
                await apply_event(key, message, f"{position}/{i}", item)

        async def dead_letter(
            key: str, message: dict[str, Any], position: str, item: EventT[bytes]
        ) -> None:
            """The message at ``position`` the runtime raised on, to the rejected topic. With an
            origin, as a fact: a run again re-sends it, and the sink knows it."""
            errors = [{"field": "$runtime", "reason": poison[position], "code": POISON}]
            payload = message["event"] if message["kind"] == "event" else message
            headers = [origin.header(*origins.next(item))]
            letter = await send_rejection(
                item, key.encode(), payload, errors, f"persons:{position}", headers
            )
            sent.append(letter)
            metrics.events.labels("poison").inc()

        async def apply_event(
            key: str, message: dict[str, Any], position: str, item: EventT[bytes]
        ) -> None:
            if position in poison:
                await dead_letter(key, message, position, item)
                return
            try:
                event = parse_event(message["event"])
                state = run.apply(key, event, message["person_id"])
            except Exception as exc:  # the batch runs again without it (advance_isolating)
                raise _Poisoned(position, runtime_error(exc)["reason"]) from exc
            metrics.events.labels(state.outcome).inc()
            if event.received_at is not None:
                metrics.processing_lag.observe(
                    max(0.0, time.time() - event.received_at.timestamp())
                )
            last[key] = item

        def moved_to(key: str, item: EventT[bytes]) -> str | None:
            if key in moved:
                return moved[key]
            if key in run.changes.persons:
                return None
            stored = writes.get(persons, key.encode(), item)
            if isinstance(stored, bytes) and stored.startswith(_MOVED):
                return stored[len(_MOVED) :].decode()
            return None

        async def erase(key: str, kind: str, item: EventT[bytes]) -> None:
            """``funnel forget`` (:mod:`stream_processors.forget`): ``forget`` drops the
            person ``key``'s state (or forwarding marker), ``unlink`` the device link kept
            under the events key ``key`` (the route stage's table: its changelog partition is
            this record's, events and person-events being co-partitioned). Either way a
            tombstone goes to the person's compacted ``facts.persons`` record, which is also
            how the command learns that the worker did it."""
            site, _, rest = key.partition(":")
            if kind == "forget":
                run.release(key)
                moved.pop(key, None)
                last.pop(key, None)
                writes.put(persons, key.encode(), None, item)
                holds.pop(key, None)
                person = person_id_of(key)
            else:
                writes.put(links, key.encode(), None, item)
                person = rest
            sent.append(await send(fact_topics["persons"], f"{site}:{person}".encode(), None))
            metrics.erased.labels(kind).inc()

        def arrivals() -> Iterator[tuple[EventT[bytes], str, dict[str, Any], str]]:
            """Each message with its record, its person key and its position (what its facts'
            ids start with); a ``batch`` record carries many, keyed each."""
            for item in batch:
                message = json.loads(cast(bytes, item.value))
                position = f"{item.message.partition}:{item.message.offset}"
                if message["kind"] == "batch":
                    for i, one in enumerate(message["items"]):
                        yield item, one.pop("key"), one, f"{position}.{i}"
                else:
                    yield item, cast(bytes, item.key).decode(), message, position

        position = ""
        for item, key, message, position in arrivals():
            reading.append(item)
            if position in poison:
                await dead_letter(key, message, position, item)
                if message["kind"] == "absorb":  # still an answer: what waits for it goes on
                    await absorbed(key, {**message, "state": None}, position, item)
                continue
            if message["kind"] == "tick":
                # The status timer, as a record: expire every due person of this partition,
                # in key order, at the tick's time. A replay does the same, with the same ids.
                now_ms, here = int(message["now_ms"]), item.message.partition
                changed = run.changes.persons
                due: set[str] = set()
                entries: dict[str, dict[str, Any] | None] = {}
                for k, stored in writes.items(persons).items():
                    if not isinstance(stored, bytes) or partition_of(k, partitions) != here:
                        continue
                    person = k.decode()
                    if stored.startswith(_HELD):
                        entries[person] = _split_held(stored)[0]
                    at = None if person in changed else _due_of(stored, config)
                    if at is not None and at <= now_ms:
                        due.add(person)
                due.update(
                    k for k in run.due(now_ms) if partition_of(k.encode(), partitions) == here
                )
                entries.update(
                    (k, entry)
                    for k, (entry, _) in holds.items()
                    if partition_of(k.encode(), partitions) == here
                )
                for person, entry in sorted(entries.items()):
                    if entry is None:
                        continue
                    entry["ticks"] += 1
                    if entry["ticks"] < hold_ticks:
                        keep_held(person, entry, item)
                        if entry["for"]:
                            due.discard(person)  # expired once its events are in
                        continue
                    # Held past the limit for a device's history that never came (a bug's
                    # trace: every hand-over is answered): the events go on without it.
                    keep_held(person, None, item)
                    if entry["held"]:
                        metrics.held.labels("waited_out").inc(len(entry["held"]))
                        log.warning(
                            "%s: %d events held %d ticks for the history of %s go on "
                            "without it",
                            person, len(entry["held"]), entry["ticks"], entry["for"],
                        )  # fmt: skip
                        await release(person, entry, f"{position}/{person}", item)
                        due.discard(person)
                for person in sorted(due):
                    last.setdefault(person, item)
                    run.expire([person], now_ms)
                await send_facts(position, item)
                continue
            if message["kind"] in ERASE_KINDS:
                await erase(key, message["kind"], item)
                continue
            target = moved_to(key, item)
            if target is not None:  # an event in flight follows the person
                if message["kind"] == "event":
                    forward = {**message, "person_id": person_id_of(target)}
                    sent.append(await send_person(target, forward))
                elif message["kind"] == "handover":  # handed over before: nothing more to give
                    sent.append(await send_person(message["into"], _absorb(key, message, None)))
                continue
            if message["kind"] == "handover":
                current = run.release(key)
                moved[key] = message["into"]
                writes.put(persons, key.encode(), _MOVED + message["into"].encode(), item)
                # Answered even with no history: the person it goes to holds events for it.
                sent.append(await send_person(message["into"], _absorb(key, message, current)))
                await send_facts(position, item)
                continue
            if message["kind"] == "absorb":
                await absorbed(key, message, position, item)
            elif not hold(key, message, item):
                await apply_event(key, message, position, item)
            await send_facts(position, item)
        changes = run.close()  # the persons' rows, once per batch, and their deadlines
        await send_facts(f"{position}:rows", batch[-1])
        await send_blocks()
        for person, saved in changes.persons.items():
            if person in moved or person not in last:
                continue
            entry = held(person, last[person])
            value = None if saved is None else _Saved(saved, changes.deadlines.get(person), entry)
            writes.put(persons, person.encode(), value, last[person])
        for person, (entry, item) in holds.items():  # held or released, the state unchanged
            if person in changes.persons and person in last:
                continue
            stored = writes.get(persons, person.encode(), item)
            data = _state_of(stored) if isinstance(stored, bytes) else b""
            writes.put(persons, person.encode(), _with_held(entry, data) or None, item)
        await _acknowledged(sent)
        writes.commit(batch)

    async def tick() -> None:
        """Ask each partition this worker owns to expire what is due (a ``tick`` record)."""
        now_ms = int(time.time() * 1000)
        tick = json.dumps({"kind": "tick", "now_ms": now_ms}).encode()
        owned = sorted(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == names.person_events
        )
        for partition in owned:
            await send(person_events, TICK_KEY, tick, partition)

    async def report() -> None:
        """Consumer lag of the input partitions held here, and the persons in state.

        Never raises: an exception in a Faust timer stops the worker, and a partition can be
        revoked while this awaits (aiokafka then refuses ``position``/``highwater``).
        """
        consumer = app.consumer
        lags = {}
        for tp in consumer.assignment():
            if tp.topic not in (names.events, names.person_events):
                continue
            try:
                position = await consumer.position(tp)
                end = consumer.highwater(tp)
            except Exception:  # revoked meanwhile (IllegalStateError, AssertionError, ...)
                continue
            if position is not None and end is not None:
                lags[(tp.topic, str(tp.partition))] = max(0, end - position)
        metrics.lag.clear()  # partitions no longer held must not keep their last value
        for (topic, partition), lag in lags.items():
            metrics.lag.labels(topic, partition).set(lag)
        with contextlib.suppress(Exception):
            metrics.state_persons.set(len(persons))

    app.agent(events, name="funnel.route")(route)
    app.agent(person_events, name="funnel.persons")(advance_persons)
    app.timer(timer_interval_s, name="funnel.expire")(tick)
    app.timer(_REPORT_EVERY_S, name="funnel.metrics")(report)


def _events_of(value: bytes) -> list[tuple[dict[str, Any] | bytes, str]]:
    """The events an ``events`` record holds (DESIGN §4: one event object, or a JSON array of
    events sharing the record's key), each decoded (once) with its place (``""``, or
    ``:<index>`` in an array). What is not a JSON object stays bytes: validation refuses it
    with its reason."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return [(value, "")]
    if isinstance(decoded, dict):
        return [(decoded, "")]
    if isinstance(decoded, list):
        return [
            (one if isinstance(one, dict) else json.dumps(one).encode(), f":{i}")
            for i, one in enumerate(decoded)
        ]
    return [(value, "")]


def block_records(
    facts: Sequence[Fact], ids: Sequence[str], origins: Sequence[tuple[int, int]]
) -> Iterator[tuple[str, bytes]]:
    """One origin partition's facts of the block tables as facts records: per table, Arrow
    IPC blocks of at most :data:`BLOCK_ROWS` rows with their fact ids and origins."""
    for table, block in fact_blocks(facts, ids, origins).items():
        for start in range(0, len(block), BLOCK_ROWS):
            yield table, block[start : start + BLOCK_ROWS].to_ipc()


def fact_id_of(fact: Fact, position: str) -> str:
    """A fact's id: the position of the record that caused it (``partition:offset:n``), but
    an event is stored once per site and event id, whichever person it reached (the same id
    sent under two persons is one event: the sink drops the second)."""
    if isinstance(fact, EventRow):
        return f"event:{fact.site_id}:{fact.event_id}"
    return position


class _Poisoned(Exception):
    """The runtime raised on the person-events message at ``position``."""

    def __init__(self, position: str, reason: str) -> None:
        super().__init__(position, reason)
        self.position, self.reason = position, reason


class _Origins:
    """The origins of a batch's facts (:mod:`storage.origin`): per input record, its facts
    numbered in the order they are sent."""

    def __init__(self) -> None:
        self.record: tuple[int, int] = (-1, -1)
        self.k = 0

    def next(self, item: EventT[bytes]) -> tuple[int, int]:
        here = (item.message.partition, item.message.offset)
        if here != self.record:
            self.record, self.k = here, 0
        self.k += 1
        return here[0], origin.seq_of(here[1], self.k - 1)


def _hold_entry() -> dict[str, Any]:
    """A person's hold entry (kept in their ``person-state`` value, :data:`_HELD`): the
    devices whose history they wait for, the events held meanwhile (in order), the ticks
    waited, and empty answers that came before the event that waits for them."""
    return {"for": [], "held": [], "ticks": 0, "answered": []}


def _settled(state: PersonState | None, device: str, message: dict[str, Any]) -> bool:
    """Whether the event ``message`` need not wait for the history of ``device`` (a key):
    the person holds that history already, or the event itself (a copy delivered again)."""
    return state is not None and (
        person_id_of(device) in state.absorbed or message["event"].get("event_id") in state.seen
    )


def _absorb(device: str, handover: dict[str, Any], state: PersonState | None) -> dict[str, Any]:
    """The answer to a hand-over: the device's history (``None``: it has none)."""
    return {
        "kind": "absorb",
        "from": device,
        "person_id": handover["person_id"],
        "state": None if state is None else state_to_builtins(state),
    }


@dataclass(slots=True)
class _Saved:
    """A person's state and next deadline, to be written as one value: the tick reads the
    deadline without decoding the state (:func:`funnel.codec.encode_with_deadline`)."""

    state: PersonState
    due: int | None
    hold: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return _with_held(self.hold, encode_with_deadline(self.state, self.due))


def _split_held(stored: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """A stored person's hold entry (``None``: none) and state (``b""``: none yet)."""
    if not stored.startswith(_HELD):
        return None, stored
    start = len(_HELD) + 4
    end = start + int.from_bytes(stored[len(_HELD) : start], "big")
    return json.loads(stored[start:end]), stored[end:]


def _state_of(stored: bytes) -> bytes:
    """:func:`_split_held`'s state alone, without decoding the entry."""
    if not stored.startswith(_HELD):
        return stored
    start = len(_HELD) + 4
    return stored[start + int.from_bytes(stored[len(_HELD) : start], "big") :]


def _with_held(entry: dict[str, Any] | None, state: bytes) -> bytes:
    """The value of a person: ``state`` (encoded), after the hold entry if there is one."""
    if entry is None:
        return state
    raw = json.dumps(entry).encode()
    return _HELD + len(raw).to_bytes(4, "big") + raw + state


def _due_of(stored: bytes, config: CoreConfig) -> int | None:
    """The next deadline of a stored person (``None``: none, or a forwarding marker)."""
    if stored.startswith(_MOVED):
        return None
    state = _state_of(stored)
    return deadline_of(state, config) if state else None


_Value = bytes | _Saved | None


class _TableTransaction:
    """A batch's table reads and writes; the writes are kept until the batch's outputs are
    acknowledged (:meth:`commit`).

    Reads see the batch's own writes first. Every table access happens while the input
    record it is for is Faust's current event, as it would inside the iteration of that
    record: the store (RocksDB keeps a database per partition) and the changelog partition
    are that record's, which is the key's own partition.
    """

    def __init__(self, stream: faust.StreamT[bytes], replayed: Any) -> None:
        self._stream = cast(faust.Stream[bytes], stream)
        self._replayed = replayed  # the counter of batches a rebalance overtook, by record
        self._pending: dict[tuple[int, bytes], tuple[Any, _Value, EventT[bytes]]] = {}
        self._read: dict[tuple[int, bytes], bytes | None] = {}
        """Values read from the tables (nothing else writes them during a batch)."""

    def get(self, table: Any, key: bytes, item: EventT[bytes]) -> _Value:
        pending = self._pending.get((id(table), key))
        if pending is not None:
            return pending[1]
        where = (id(table), key)
        if where not in self._read:
            with self._as_current(item):
                self._read[where] = cast(bytes | None, table.get(key))
        return self._read[where]

    def get_bytes(self, table: Any, key: bytes, item: EventT[bytes]) -> bytes | None:
        """:meth:`get` for the tables that hold bytes only."""
        value = self.get(table, key, item)
        assert value is None or isinstance(value, bytes)
        return value

    def items(self, table: Any) -> dict[bytes, _Value]:
        """The table's entries (all partitions held here), as this batch sees them."""
        view: dict[bytes, _Value] = dict(table.items())
        for (table_id, key), (_, value, _) in self._pending.items():
            if table_id == id(table):
                view[key] = value
        return view

    def put(self, table: Any, key: bytes, value: _Value, item: EventT[bytes]) -> None:
        """Set ``key`` (``None``: delete it; a person's state is serialised then) once the
        batch's outputs are acknowledged."""
        self._pending[(id(table), key)] = (table, value, item)

    def commit(self, batch: Sequence[EventT[bytes]]) -> None:
        """Write the batch's changes (its outputs are acknowledged) and move its partitions'
        commit positions past it (:mod:`stream_processors.commits`). Unless a rebalance began
        while it ran, or it holds a record of an older generation: then none of it is written
        or counted, and it goes again. A worker the group evicted (a stall) finds out so,
        most of the time, before its last batch writes over the partition's new owner."""
        if not commits.counts(self._stream.app, batch):
            self._replayed.inc(len(batch))
            self._pending.clear()
            log.info("a rebalance began during a batch: its %d records go again", len(batch))
            return
        for (_, key), (table, value, item) in self._pending.items():
            if isinstance(value, _Saved):
                value = value.encode()
            with self._as_current(item):
                if value is not None:
                    table[key] = value
                elif table.get(key) is not None:
                    del table[key]
        self._pending.clear()
        commits.advance(batch)

    @contextlib.contextmanager
    def _as_current(self, item: EventT[bytes]) -> Iterator[None]:
        """Make ``item`` the current event. Only for synchronous work: the stream's reader
        cannot run in between, and finds its own current event back afterwards."""
        previous = self._stream.current_event
        self._stream._set_current_event(item)
        try:
            yield
        finally:
            self._stream._set_current_event(previous)


class _Metrics:
    """The worker's Prometheus series (``GET /metrics`` on its web port; names in
    :mod:`funnel.metrics`).

    ``funnel_worker_events_total{outcome}``: ``rejected`` (dead-lettered by the route stage),
    and how the persons stage took each event: ``applied``, ``reordered``, ``late`` (beyond
    the lateness bound: corrected, and counted here), ``duplicate`` (a client's retry or a
    re-delivered event: its id is in the person's state, the runtime's dedup). Counted
    at least once: a batch replayed after a crash counts again.
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events = Counter(
            series.WORKER_EVENTS, "Events by what the worker did with them", ["outcome"], registry=r
        )
        self.replayed = Counter(
            series.WORKER_REPLAYED_RECORDS,
            "Input records to be processed again: a rebalance overtook their batch, or "
            "records before them were skipped",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            series.WORKER_BATCH_SECONDS,
            "Processing time of a batch, by stage",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.processing_lag = Histogram(
            series.WORKER_PROCESSING_LAG_SECONDS,
            "Collector receipt of an event to its processing",
            buckets=series.FRESHNESS_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            series.WORKER_CONSUMER_LAG,
            "Records behind the end of the partition",
            ["topic", "partition"],
            registry=r,
        )
        self.held = Counter(
            series.WORKER_HELD_EVENTS,
            "Events held for a device's history (held), and released without it after the "
            "limit (waited_out)",
            ["how"],
            registry=r,
        )
        self.erased = Counter(
            series.WORKER_ERASED,
            "Person states (forget) and device links (unlink) erased by funnel forget",
            ["kind"],
            registry=r,
        )
        self.state_persons = Gauge(
            series.WORKER_STATE_PERSONS, "Person keys in this worker's state", registry=r
        )


async def _admitted(
    app: faust.App, batch: Sequence[EventT[bytes]], metrics: _Metrics
) -> list[EventT[bytes]]:
    """The records of ``batch`` that continue their partitions (:func:`commits.admit`); where
    records were skipped, the partition is read again from its position."""
    admission = commits.admit(batch)
    if admission.ahead:
        metrics.replayed.labels("skipped").inc(admission.ahead)
    for tp, offset in admission.again.items():
        try:
            await app.consumer.seek(tp, offset)
        except Exception:  # revoked meanwhile: the next owner starts from the commit
            log.warning("could not read %s again from %d", tp, offset, exc_info=True)
    return admission.taken


async def changelogs_known(app: Any, attempts: int = 50) -> bool:
    """Wait until the consumer's metadata knows every table's changelog topic.

    Before a table's first write Faust checks that its changelog has as many partitions as
    its source topic, reading the consumer's metadata snapshot. A changelog the worker created
    moments before may be missing from that snapshot (0 partitions: seen on a loaded machine),
    and the snapshot is refreshed only minutes later, so the write raises and the worker
    exits. Each attempt asks the client for fresh metadata and waits for it (no sleep).
    Returns whether every changelog is known (after ``attempts``, Faust's check decides)."""
    if getattr(app, "_funnel_changelogs_known", False):
        return True
    for _ in range(attempts):
        missing = [
            table.changelog_topic_name
            for table in app.tables.values()
            if not app.consumer.topic_partitions(table.changelog_topic_name)
        ]
        if not missing:
            app._funnel_changelogs_known = True
            return True
        client = getattr(getattr(app.consumer, "_consumer", None), "_client", None)
        if client is None:  # not aiokafka's consumer: leave the check to Faust
            return False
        log.info("waiting for the metadata of %s", ", ".join(missing))
        await client.force_metadata_update()
    return False


def _batches(stream: faust.StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream in batches; each batch's offsets are acknowledged after its iteration."""
    return cast(faust.Stream[bytes], stream).take_events(BATCH_SIZE, within=BATCH_WAIT_S)


async def _acknowledged(sent: list[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged every record the batch sent."""
    await asyncio.gather(*sent)


async def _complete_or_exit(work: Awaitable[None]) -> None:
    """Run one batch to its end, or end the process.

    Faust acknowledges a batch's offsets once its iteration ends, however it ends: a batch
    cut short (an unacknowledged output, a bug, a cancellation at shutdown) would have its
    offsets committed with its state unwritten. Exiting at once leaves them uncommitted, and
    a restart replays the batch.
    """
    try:
        await work
    except BaseException:
        log.exception("a batch did not complete; exiting so that it is replayed")
        logging.shutdown()
        os._exit(EXIT_BATCH_CUT_SHORT)
