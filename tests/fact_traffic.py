"""Facts as the stream emits them, computed in-process: the sink's test and benchmark input.

:func:`fact_stream` runs the simulator's (optionally messy) traffic through the collector's
intake and the pure core, resolving identities like the Faust agents, and gives every fact
the id the persons agent would give it (``fact_id = "<partition>:<offset>:<n>"``: the
person-events record that caused it, on a topic of ``partitions`` partitions, and its place
among that record's facts) and, but for person rows, its origin header
(:mod:`storage.origin`). Deterministic for a seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from funnel.facts import Fact, PersonRow
from funnel.identity import device_key, resolve
from funnel.intake import take_batch
from funnel.processor import CoreConfig, PersonState, merge, process
from funnel.serialization import dumps_row
from producers.messiness import Mess, arrivals
from producers.simulator import simulate
from storage import origin
from stream_processors.topics import partition_of

__all__ = ["FactRecord", "fact_stream"]


@dataclass(frozen=True, slots=True)
class FactRecord:
    """One record of a facts topic: its table, key, JSON value (with ``fact_id``) and
    headers (the origin, but for person rows)."""

    table: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def row(self) -> dict[str, object]:
        return json.loads(self.value)  # type: ignore[no-any-return]


def fact_stream(
    persons: int, *, seed: int = 11, partitions: int = 4, messy: bool = True
) -> Iterator[FactRecord]:
    """Every fact of ``persons`` simulated people's traffic, in the order they are made."""
    sim = simulate(persons, seed=seed, site_id="s", multi_device=0.1)
    config = CoreConfig.default()
    states: dict[str, PersonState] = {}
    aliases: dict[str, str] = {}
    offsets = [0] * partitions

    def records(key: str, facts: list[Fact]) -> Iterator[FactRecord]:
        partition = partition_of(key.encode(), partitions)
        offset = offsets[partition]
        offsets[partition] += 1
        for n, fact in enumerate(facts):
            value = dumps_row({**fact.row(), "fact_id": f"{partition}:{offset}:{n}"}).encode()
            if isinstance(fact, PersonRow):
                owner = f"{fact.site_id}:{fact.person_id}".encode()
                yield FactRecord(fact.table, owner, value)
            else:
                where = origin.header(partition, origin.seq_of(offset, n))
                yield FactRecord(fact.table, key.encode(), value, (where,))

    for arrival in arrivals(sim.events, Mess.realistic() if messy else Mess(), seed=seed):
        intake = take_batch([arrival.payload], site_id="s", received_at=arrival.arrives_at)
        for event in intake.accepted:
            device = device_key(event.site_id, event.anonymous_id) if event.anonymous_id else None
            who = resolve(event, aliases.get(device) if device else None)
            if who.link_from is not None and who.device is not None:
                aliases[who.device] = who.key
                anonymous = states.pop(who.link_from, None)
                if anonymous is not None:
                    state, facts = merge(states.get(who.key), anonymous, config, who.person_id)
                    states[who.key] = state
                    yield from records(who.key, facts)
            state, facts = process(states.get(who.key), event, config, who.person_id)
            states[who.key] = state
            yield from records(who.key, facts)
