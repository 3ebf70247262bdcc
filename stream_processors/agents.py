"""The stream agents: read state, call the core, write state, send. Nothing else lives here.

Two stages, because a person's events arrive keyed by device (or by customer for back-end
events) and a device can turn out to belong to a customer whose state lives on another
partition (DESIGN §2, issue 4):

1. ``route`` reads the events topic. It drops client retries (event ids seen for the same
   key within the dedup horizon, table ``recent-event-ids``). Per device it keeps the
   customer the device is linked to (table ``device-links``), resolves each event's person
   (:func:`funnel.identity.resolve`) and forwards it to the ``person-events`` topic keyed by
   person. When an event creates a link it first sends the device's anonymous person a
   ``handover`` command.
2. ``persons`` reads ``person-events``. Per person it keeps the state (table
   ``person-state``) and applies events with :func:`funnel.processor.process`. On a
   ``handover`` the anonymous person sends its whole state to the customer's person as an
   ``absorb`` message and leaves a forwarding marker behind; on ``absorb`` the customer's
   person merges it (:func:`funnel.processor.merge`).

Exactly once, from at-least-once delivery (DESIGN §9; Faust's ``exactly_once`` mode crashes on
rebalance, faust-streaming #323):

* Each stage works in batches and writes its tables only after the broker acknowledged every
  record the batch sent. A table (its changelog) therefore never runs ahead of the outputs:
  a crash loses state, never outputs whose inputs the state already counts. Faust commits an
  input offset only after the batch is done and its producer flushed.
* What a crash leaves is replayed from the last committed offset, against state that is the
  same or older than at the first run, and the core is deterministic: replayed inputs already
  in the state are no-ops (event ids, hand-over markers, merged ids), and the others produce
  the very outputs they produced the first time.
* Every fact carries ``fact_id = "<partition>:<offset>:<n>"``: the person-events record that
  caused it and its place among that record's facts. A replayed fact has the id of its first
  copy, and the sink drops it (:class:`storage.sink.Sink`).

A batch that cannot complete (an output the broker did not acknowledge, a bug, a stop in the
middle of it) ends the process with exit code 70 instead of going on: its offsets are then
never committed, and a restart replays it. Invalid events go to the rejected
topic with their reasons and a ``rejection_id`` (the input's position), by which a reader
of that topic recognises a copy re-sent after a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import faust
from faust.types import EventT

from funnel.dedup import RecentIds
from funnel.events import InvalidEvent, parse_event
from funnel.identity import person_id_of, resolve
from funnel.processor import CoreConfig, merge, process
from funnel.serialization import dumps_row, state_from_json, state_to_json
from stream_processors.topics import FACT_TABLES, TopicNames

__all__ = ["register"]

_MOVED = b"moved:"
BATCH_SIZE = 500
"""Records per batch: one acknowledgement round trip per batch, not per record."""
BATCH_WAIT_S = 0.1
"""How long a batch waits to fill up."""
EXIT_BATCH_CUT_SHORT = 70

log = logging.getLogger(__name__)


def register(app: faust.App, names: TopicNames, config: CoreConfig) -> None:
    """Declare the topics and tables on ``app`` and register both agents."""
    events = app.topic(names.events, key_type=bytes, value_type=bytes)
    person_events = app.topic(names.person_events, key_type=bytes, value_type=bytes)
    rejected = app.topic(names.rejected, key_type=bytes, value_type=bytes)
    facts = {t: app.topic(names.facts(t), key_type=bytes, value_type=bytes) for t in FACT_TABLES}
    # Tables are written after a batch, outside the iteration of any one event, so the
    # producer's partitioner places their changelog records: by the table key, which is the
    # key of the input record, so a key's changelog partition is its input partition.
    table = partial(app.Table, default=None, key_type=bytes, value_type=bytes, use_partitioner=True)
    links = table("device-links")
    recent = table("recent-event-ids")
    persons = table("person-state")

    async def send(topic: faust.TopicT, key: bytes, value: bytes) -> Awaitable[Any]:
        """Queue one record; the returned awaitable resolves when the broker acknowledged it."""
        return await topic.send(key=key, value=value, force=True)

    async def send_person(key: str, message: dict[str, Any]) -> Awaitable[Any]:
        return await send(person_events, key.encode(), json.dumps(message).encode())

    async def route(stream: faust.StreamT[bytes]) -> None:
        async for batch in _batches(stream):
            await _whole(route_batch(batch))

    async def route_batch(batch: Sequence[EventT[bytes]]) -> None:
        sent: list[Awaitable[Any]] = []
        seen_ids: dict[bytes, RecentIds] = {}  # this batch's table writes, in memory
        new_links: dict[bytes, bytes] = {}
        for item in batch:
            key, payload = cast(bytes, item.key), cast(bytes, item.value)
            try:
                event = parse_event(payload)
            except InvalidEvent as exc:
                # The collector's dead-letter record (a `rejected_events` row), plus the
                # input's position: a copy re-sent after a crash has the same id.
                rejection = {
                    "rejection_id": f"{item.message.partition}:{item.message.offset}",
                    "received_at": datetime.fromtimestamp(item.message.timestamp, UTC).isoformat(),
                    "site_id": (key or b"").decode("utf-8", "replace").partition(":")[0],
                    "reason": json.dumps(exc.errors),
                    "payload": payload.decode("utf-8", "replace"),
                }
                sent.append(await send(rejected, key or b"", json.dumps(rejection).encode()))
                continue
            link_key = key or event.partition_key.encode()
            seen = seen_ids.get(link_key) or RecentIds.load(recent.get(link_key))
            if not seen.add(event.event_id, event.occurred_at, config.dedup_horizon):
                continue  # a client retry: the same key always lands on this partition
            seen_ids[link_key] = seen
            alias = None
            if event.anonymous_id:
                alias = new_links.get(link_key) or links.get(link_key)
            who = resolve(event, alias.decode() if alias else None)
            if who.link_from is not None:
                new_links[link_key] = who.key.encode()
                handover = {"kind": "handover", "into": who.key, "person_id": who.person_id}
                sent.append(await send_person(who.link_from, handover))
            message = {
                "kind": "event",
                "person_id": who.person_id,
                "event": json.loads(payload),
            }
            sent.append(await send_person(who.key, message))
        await _acknowledged(sent)
        for link_key, seen in seen_ids.items():
            recent[link_key] = seen.dump()
        for link_key, target in new_links.items():
            links[link_key] = target

    async def apply(stream: faust.StreamT[bytes]) -> None:
        async for batch in _batches(stream):
            await _whole(apply_batch(batch))

    async def apply_batch(batch: Sequence[EventT[bytes]]) -> None:
        sent: list[Awaitable[Any]] = []
        written: dict[bytes, bytes] = {}  # this batch's table writes, in memory
        for item in batch:
            key, message = cast(bytes, item.key), json.loads(cast(bytes, item.value))
            stored = written.get(key) if key in written else persons.get(key)
            if stored is not None and stored.startswith(_MOVED):
                if message["kind"] == "event":  # in flight when the person moved: follow it
                    target = stored[len(_MOVED) :].decode()
                    forward = {**message, "person_id": person_id_of(target)}
                    sent.append(await send_person(target, forward))
                continue
            state = state_from_json(stored) if stored is not None else None
            if message["kind"] == "handover":
                written[key] = _MOVED + message["into"].encode()
                if state is not None:
                    absorb = {
                        "kind": "absorb",
                        "person_id": message["person_id"],
                        "state": json.loads(state_to_json(state)),
                    }
                    sent.append(await send_person(message["into"], absorb))
                continue
            if message["kind"] == "absorb":
                other = state_from_json(json.dumps(message["state"]))
                state, out = merge(state, other, config, message["person_id"])
            else:
                event = parse_event(message["event"])
                state, out = process(state, event, config, message["person_id"])
            written[key] = state_to_json(state)
            origin = f"{item.message.partition}:{item.message.offset}"
            for n, fact in enumerate(out):
                row = {**fact.row(), "fact_id": f"{origin}:{n}"}
                sent.append(await send(facts[fact.table], key, dumps_row(row).encode()))
        await _acknowledged(sent)
        for key, value in written.items():
            persons[key] = value

    app.agent(events, name="funnel.route")(route)
    app.agent(person_events, name="funnel.persons")(apply)


def _batches(stream: faust.StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream in batches; each batch's offsets are acknowledged after its iteration."""
    return cast(faust.Stream[bytes], stream).take_events(BATCH_SIZE, within=BATCH_WAIT_S)


async def _acknowledged(sent: list[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged every record the batch sent."""
    await asyncio.gather(*sent)


async def _whole(work: Awaitable[None]) -> None:
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
