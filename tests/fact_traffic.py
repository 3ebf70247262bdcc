"""Facts as the stream emits them, computed in-process: the sink's test and benchmark input.

:func:`fact_stream` runs the simulator's (optionally messy) traffic through the collector's
intake and the pure core, resolving identities like the Faust agents, and gives every fact
the id the persons agent would give it (``fact_id = "<partition>:<offset>:<n>"``: the
person-events record that caused it, on a topic of ``partitions`` partitions, and its place
among that record's facts) and, but for person rows, its origin (:mod:`storage.origin`).
Deterministic for a seed.

By default every fact is one JSON record (the origin in a header). With ``blocks=N`` the
records are the Kafka worker's: the facts of its block tables go as Arrow blocks (key
``block:<partition>``, made by the worker's ``block_records``, the ids and origins as columns) once
every ``N`` person-events records, as a worker's batch ends; lead changes and person rows
stay one JSON record each.
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
from storage.fact_columns import Block
from stream_processors.agents import BLOCK_TABLES, block_records
from stream_processors.topics import partition_of

__all__ = ["FactRecord", "fact_stream"]


@dataclass(frozen=True, slots=True)
class FactRecord:
    """One record of a facts topic: its table, key, value (a JSON row with ``fact_id``, or
    an Arrow block) and headers (a JSON row's origin, but for person rows)."""

    table: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def is_block(self) -> bool:
        return self.key.startswith(b"block:")

    @property
    def row(self) -> dict[str, object]:
        """A JSON record's row."""
        return json.loads(self.value)  # type: ignore[no-any-return]

    def columns(self, *names: str) -> list[list[object]]:
        """Columns of the record's rows (a JSON record: one row), decoded once."""
        if self.is_block:
            block = Block.from_ipc(self.value)
            return [block.column(name) for name in names]
        row = self.row
        return [[row[name]] for name in names]


def fact_stream(
    persons: int, *, seed: int = 11, partitions: int = 4, messy: bool = True, blocks: int = 0
) -> Iterator[FactRecord]:
    """Every fact of ``persons`` simulated people's traffic, in the order they are made (with
    ``blocks``, those of the block tables at the end of each batch of that many records)."""
    sim = simulate(persons, seed=seed, site_id="s", multi_device=0.1)
    config = CoreConfig.default()
    states: dict[str, PersonState] = {}
    aliases: dict[str, str] = {}
    offsets = [0] * partitions
    # per origin partition: the facts kept for the next blocks, their ids and origins
    kept: list[tuple[list[Fact], list[str], list[tuple[int, int]]]] = [
        ([], [], []) for _ in range(partitions)
    ]
    in_batch = 0

    def records(key: str, facts: list[Fact]) -> Iterator[FactRecord]:
        nonlocal in_batch
        partition = partition_of(key.encode(), partitions)
        offset = offsets[partition]
        offsets[partition] += 1
        for n, fact in enumerate(facts):
            fact_id = f"{partition}:{offset}:{n}"
            if isinstance(fact, PersonRow):
                owner = f"{fact.site_id}:{fact.person_id}".encode()
                yield FactRecord(fact.table, owner, _json(fact, fact_id))
            elif blocks and fact.table in BLOCK_TABLES:
                kept[partition][0].append(fact)
                kept[partition][1].append(fact_id)
                kept[partition][2].append((partition, origin.seq_of(offset, n)))
            else:
                where = origin.header(partition, origin.seq_of(offset, n))
                yield FactRecord(fact.table, key.encode(), _json(fact, fact_id), (where,))
        in_batch += 1
        if blocks and in_batch >= blocks:
            yield from flush()

    def flush() -> Iterator[FactRecord]:
        nonlocal in_batch
        in_batch = 0
        for partition, (facts, ids, where) in enumerate(kept):
            key = f"block:{partition}".encode()
            for table, value in block_records(facts, ids, where):
                yield FactRecord(table, key, value)
            for column in (facts, ids, where):
                column.clear()

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
    yield from flush()


def _json(fact: Fact, fact_id: str) -> bytes:
    return dumps_row({**fact.row(), "fact_id": fact_id}).encode()
