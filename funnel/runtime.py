"""The runtime: one orchestration of the core for every host (DESIGN §9a).

A host (the embedded runner; the Kafka worker's person stage) opens a :class:`Batch` over
its saved state (a :class:`StateReader`), submits arrivals in order and asks for the timer's
step; the batch does the rest — dedup by event id across persons, identity resolution and
the merge of a device's anonymous person into its customer, the per-person fold
(:func:`funnel.processor.process`), the status timer (:func:`funnel.processor.expire`) —
and collects what the host must write as one unit: the facts and the state changes
(:class:`Changes`). Reads inside a batch see the batch's own changes first. Nothing here
does I/O; the host loads and stores state and moves the facts.

Contract: the host writes a batch's facts and its state changes together (both, or
neither, as seen after a crash), and opens the next batch over the state including them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from funnel.config import CoreConfig
from funnel.events import Event
from funnel.facts import Fact
from funnel.identity import device_key, resolve
from funnel.processor import PersonState, expire, merge, next_deadline, person_row, process

__all__ = ["GC_THRESHOLDS", "Batch", "Changes", "StateReader", "applied_key", "tune_gc"]


class StateReader(Protocol):
    """The saved state a batch starts from (as of the host's last written batch)."""

    def person(self, key: str) -> PersonState | None:
        """The person's state under its person key (``None``: not seen, or merged away)."""

    def alias(self, device: str) -> str | None:
        """The customer key a device key is linked to."""

    def applied(self, event: str) -> bool:
        """Whether the event (:func:`applied_key`) was applied, under any person."""


#: The cyclic collector's thresholds for a host process (:func:`tune_gc`).
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Set the cyclic garbage collector for a host of the runtime; call once at start.

    A batch allocates many short-lived objects that form no cycles (reference counting
    frees them) while the saved state keeps many long-lived ones. With CPython's defaults
    (a young collection every 700 allocations, a full one often) the collector traversed
    the saved state over and over: 15% of a batch's time in ``bench_core`` with a small
    state, over half of it with the simulator's events alive beside it. A young collection
    every 20,000 allocations and a full one after 100 older ones keep it to a few percent;
    cycles are still collected. What the process allocated before (modules, configuration)
    is frozen out of every later collection (:func:`gc.freeze`).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def applied_key(event: Event) -> str:
    """An event's identity across persons: its site and id."""
    return f"{event.site_id}:{event.event_id}"


@dataclass(slots=True)
class Changes:
    """What a batch changed: the host writes it as one unit (module docstring)."""

    facts: list[Fact] = field(default_factory=list)
    persons: dict[str, PersonState | None] = field(default_factory=dict)
    """Person key → its new state (``None``: gone, merged into a customer)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Device key → the customer key it is now linked to."""
    applied: dict[str, None] = field(default_factory=dict)
    """Events applied (:func:`applied_key`), in order."""
    deadlines: dict[str, int | None] = field(default_factory=dict)
    """Person key → when the timer next has something to say (epoch ms; ``None``: never);
    complete once the batch is closed (:meth:`Batch.close`)."""
    submitted: int = 0
    duplicates: int = 0
    """Events not applied: their site and id were applied before, under any person."""

    def __bool__(self) -> bool:
        return bool(self.facts or self.persons or self.aliases or self.applied)


class Batch:
    """Arrivals applied over ``saved``; :meth:`close` gives what to write.

    A person's row goes out once per batch (when the batch is closed), not once per event:
    the row says where the person stands after all the batch's events.
    """

    def __init__(self, config: CoreConfig, saved: StateReader) -> None:
        self.config = config
        self.saved = saved
        self.changes = Changes()
        self._owed: dict[str, None] = {}
        """Persons whose events changed them since their last row."""

    def person(self, key: str) -> PersonState | None:
        changes = self.changes.persons
        return changes[key] if key in changes else self.saved.person(key)

    def submit(self, event: Event) -> bool:
        """Apply one event; ``False`` when it was a duplicate (nothing applied).

        Identity first: an event that links a device to a customer merges the device's
        anonymous person into the customer's before the event itself is applied.
        """
        changes = self.changes
        changes.submitted += 1
        seen = applied_key(event)
        if seen in changes.applied or self.saved.applied(seen):
            changes.duplicates += 1
            return False
        alias = None
        if event.anonymous_id:
            device = device_key(event.site_id, event.anonymous_id)
            alias = changes.aliases.get(device) or self.saved.alias(device)
        who = resolve(event, alias)
        if who.link_from is not None and who.device is not None:
            changes.aliases[who.device] = who.key
            anonymous = self.release(who.link_from)
            if anonymous is not None:
                self.absorb(who.key, anonymous, who.person_id)
        if self.apply(who.key, event, who.person_id).outcome == "duplicate":
            changes.duplicates += 1
            return False
        changes.applied[seen] = None
        return True

    def apply(self, key: str, event: Event, person_id: str) -> PersonState:
        """The per-person step of :meth:`submit`, for a host that resolved the person
        already (the Kafka worker's person stage): fold ``event`` into the person ``key``
        (new: named ``person_id``). Returns the state; its ``outcome`` says how the event was
        taken (``duplicate``: nothing changed)."""
        state, facts = process(self.person(key), event, self.config, person_id, row=False)
        if state.outcome != "duplicate":
            self._keep(key, state, facts)
            self._owed[key] = None
        return state

    def absorb(self, key: str, other: PersonState, person_id: str) -> PersonState:
        """Merge ``other`` (a device's anonymous person, handed over) into the person
        ``key`` (:func:`funnel.processor.merge`)."""
        state, facts = merge(self.person(key), other, self.config, person_id)
        self._keep(key, state, facts)
        return state

    def release(self, key: str) -> PersonState | None:
        """Take the person ``key`` out (handed over to another person): their state as this
        batch sees it; no row goes out for them any more."""
        state = self.person(key)
        self._owed.pop(key, None)
        self._keep(key, None, [])
        return state

    def submit_all(self, events: Iterable[Event]) -> list[bool]:
        return [self.submit(event) for event in events]

    def due(self, now_ms: int) -> list[str]:
        """The persons this batch changed whose next deadline is at or before ``now_ms``."""
        self._deadlines()
        return [k for k, due in self.changes.deadlines.items() if due is not None and due <= now_ms]

    def expire(self, keys: Iterable[str], now_ms: int) -> int:
        """The status timer at ``now_ms`` for the persons ``keys`` (those due, in the order
        given); returns how many changed."""
        changed = 0
        for key in keys:
            state = self.person(key)
            if state is None:
                continue
            self._row(key)
            state, facts = expire(state, now_ms, self.config)
            changed += bool(facts)
            self._keep(key, state, facts)
        return changed

    def close(self) -> Changes:
        """Everything the batch changed, each changed person's row included."""
        for key in list(self._owed):
            self._row(key)
        self._deadlines()
        return self.changes

    def _row(self, key: str) -> None:
        """The person's row, if their events changed them since the last one."""
        if self._owed.pop(key, 0) is None:
            state = self.changes.persons[key]
            if state is not None:
                self.changes.facts.extend(person_row(state, self.config))

    def _deadlines(self) -> None:
        """The changed persons' next deadlines (after their rows: a deadline is when the
        timer has something to say that the last row did not)."""
        deadlines = self.changes.deadlines
        for key in list(self.changes.persons):
            if key not in deadlines:
                self._row(key)
                state = self.changes.persons[key]
                deadlines[key] = None if state is None else next_deadline(state, self.config)

    def _keep(self, key: str, state: PersonState | None, facts: list[Fact]) -> None:
        changes = self.changes
        changes.persons[key] = state
        changes.deadlines.pop(key, None)
        changes.facts.extend(facts)
