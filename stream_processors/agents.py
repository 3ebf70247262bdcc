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
   person merges it (:func:`funnel.processor.merge`). Every step is idempotent, so the
   at-least-once redelivery of a restart cannot count anything twice: events are deduplicated
   by id in the state, a repeated hand-over finds the marker, a repeated absorb finds its
   events already merged.

Invalid events go to the rejected topic with their reasons.
"""

from __future__ import annotations

import json
from typing import Any

import faust

from funnel.dedup import RecentIds
from funnel.events import InvalidEvent, parse_event
from funnel.identity import person_id_of, resolve
from funnel.processor import CoreConfig, merge, process
from funnel.serialization import dumps_row, state_from_json, state_to_json
from stream_processors.topics import FACT_TABLES, TopicNames

__all__ = ["register"]

_MOVED = b"moved:"


def register(app: faust.App, names: TopicNames, config: CoreConfig) -> None:
    """Declare the topics and tables on ``app`` and register both agents."""
    events = app.topic(names.events, key_type=bytes, value_type=bytes)
    person_events = app.topic(names.person_events, key_type=bytes, value_type=bytes)
    rejected = app.topic(names.rejected, key_type=bytes, value_type=bytes)
    facts = {t: app.topic(names.facts(t), key_type=bytes, value_type=bytes) for t in FACT_TABLES}
    links = app.Table("device-links", default=None, key_type=bytes, value_type=bytes)
    recent = app.Table("recent-event-ids", default=None, key_type=bytes, value_type=bytes)
    persons = app.Table("person-state", default=None, key_type=bytes, value_type=bytes)

    async def send_person(key: str, message: dict[str, Any]) -> None:
        await person_events.send(key=key.encode(), value=json.dumps(message).encode())

    async def route(stream: faust.StreamT[bytes]) -> None:
        async for key, payload in stream.items():
            try:
                event = parse_event(payload)
            except InvalidEvent as exc:
                payload_text = payload.decode("utf-8", "replace")
                reason = json.dumps({"errors": exc.errors, "payload": payload_text})
                await rejected.send(key=key, value=reason.encode())
                continue
            link_key = key or event.partition_key.encode()
            seen = RecentIds.load(recent.get(link_key))
            if not seen.add(event.event_id, event.occurred_at, config.dedup_horizon):
                continue  # a client retry: the same key always lands on this partition
            recent[link_key] = seen.dump()
            alias = links.get(link_key) if event.anonymous_id else None
            who = resolve(event, alias.decode() if alias else None)
            if who.link_from is not None:
                links[link_key] = who.key.encode()
                await send_person(
                    who.link_from, {"kind": "handover", "into": who.key, "person_id": who.person_id}
                )
            await send_person(
                who.key, {"kind": "event", "person_id": who.person_id, "event": json.loads(payload)}
            )

    async def apply(stream: faust.StreamT[bytes]) -> None:
        async for key, payload in stream.items():
            message = json.loads(payload)
            stored = persons.get(key)
            if stored is not None and stored.startswith(_MOVED):
                if message["kind"] == "event":  # in flight when the person moved: follow it
                    target = stored[len(_MOVED) :].decode()
                    await send_person(target, {**message, "person_id": person_id_of(target)})
                continue
            state = state_from_json(stored) if stored is not None else None
            if message["kind"] == "handover":
                persons[key] = _MOVED + message["into"].encode()
                if state is not None:
                    await send_person(
                        message["into"],
                        {
                            "kind": "absorb",
                            "person_id": message["person_id"],
                            "state": json.loads(state_to_json(state)),
                        },
                    )
                continue
            if message["kind"] == "absorb":
                other = state_from_json(json.dumps(message["state"]))
                state, out = merge(state, other, config, message["person_id"])
            else:
                event = parse_event(message["event"])
                state, out = process(state, event, config, message["person_id"])
            persons[key] = state_to_json(state)
            for fact in out:
                await facts[fact.table].send(key=key, value=dumps_row(fact.row()).encode())

    app.agent(events, name="funnel.route")(route)
    app.agent(person_events, name="funnel.persons")(apply)
