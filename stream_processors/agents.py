"""The stream agent: read the person's state, call the core, write the state, send the facts.

Nothing else happens here (DESIGN §3); all decisions are in :func:`funnel.processor.process`.
Person state lives in a changelog-backed Faust table keyed like the events topic
(``site_id:person``), so a person's state sits on the partition that carries their events.
Invalid events go to the rejected topic with their reasons.
"""

from __future__ import annotations

import json

import faust

from funnel.events import InvalidEvent, parse_event
from funnel.processor import CoreConfig, process
from funnel.serialization import dumps_row, state_from_json, state_to_json
from stream_processors.topics import FACT_TABLES, TopicNames

__all__ = ["register"]


def register(app: faust.App, names: TopicNames, config: CoreConfig) -> None:
    """Declare the topics and the state table on ``app`` and register the agent."""
    events = app.topic(names.events, key_type=bytes, value_type=bytes)
    rejected = app.topic(names.rejected, key_type=bytes, value_type=bytes)
    facts = {t: app.topic(names.facts(t), key_type=bytes, value_type=bytes) for t in FACT_TABLES}
    persons = app.Table("person-state", default=None, key_type=bytes, value_type=bytes)

    async def process_events(stream: faust.StreamT[bytes]) -> None:
        async for key, payload in stream.items():
            try:
                event = parse_event(payload)
            except InvalidEvent as exc:
                payload_text = payload.decode("utf-8", "replace")
                reason = json.dumps({"errors": exc.errors, "payload": payload_text})
                await rejected.send(key=key, value=reason.encode())
                continue
            state_key = key or event.partition_key.encode()
            stored = persons.get(state_key)
            state, out = process(state_from_json(stored) if stored else None, event, config)
            persons[state_key] = state_to_json(state)
            for fact in out:
                await facts[fact.table].send(key=state_key, value=dumps_row(fact.row()).encode())

    app.agent(events, name="funnel.process-events")(process_events)
