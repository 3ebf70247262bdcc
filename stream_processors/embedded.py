"""The embedded runner: the pure core in this process, facts batched into a store.

Used by ``funnel demo`` and ``funnel serve``. It calls the same
:func:`funnel.processor.process` as the Faust agent, so both modes produce the same facts.

Contract: :meth:`EmbeddedPipeline.submit` takes each person's events in their order; facts
are buffered per table and written when a buffer reaches ``batch_size`` or on
:meth:`EmbeddedPipeline.flush`. After ``flush`` returns, every fact submitted so far is in the
store. A write the store cannot take now raises and keeps its rows buffered: they go with
the next write, so a :class:`~storage.backends.StoreError` loses nothing (the persons' states
have seen those events already, so a client's retry could not bring their facts back). Rows
the store refuses for their values (:mod:`storage.poison`) are not retried: the rest of their
batch lands, they go to ``rejected_events`` with the store's reason, and :meth:`flush`
returns them, so one bad value never blocks the next writes.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Iterable

from funnel.clock import Clock, SystemClock, to_millis
from funnel.dedup import BoundedIds
from funnel.events import Event
from funnel.facts import Fact
from funnel.identity import device_key, resolve
from funnel.processor import CoreConfig, PersonState, expire, merge, next_deadline, process
from storage.backends import Store, StoreError
from storage.gate import CommitGate
from storage.poison import Refused, insert_isolating

__all__ = ["EmbeddedPipeline", "GatedPipeline"]

log = logging.getLogger(__name__)


class EmbeddedPipeline:
    """Process events in-process and land the facts in ``store``."""

    def __init__(
        self,
        store: Store,
        config: CoreConfig,
        *,
        batch_size: int = 20_000,
        clock: Clock | None = None,
        max_event_ids: int = 1_000_000,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.config = config
        self.batch_size = batch_size
        self.states: dict[str, PersonState] = {}
        self.aliases: dict[str, str] = {}
        """Device key → the customer key it is linked to."""
        self._buffers: dict[str, list[dict[str, object]]] = defaultdict(list)
        self._refused: list[Refused] = []
        self.applied = BoundedIds(max_event_ids)
        """``site:event_id`` of the events applied, across persons (the newest ``max_event_ids``):
        an event id sent again under another person is the same event, applied once."""
        self.processed = 0
        self.duplicates = 0
        """Events dropped because their site and id were applied before."""
        self.refused_rows = 0
        """Rows the store refused for their values (dead-lettered), since the start."""

    def submit(self, event: Event) -> bool:
        """Apply one event and buffer its facts (a full buffer is written at once); ``False``
        when it was a duplicate (nothing applied).

        Identity first: an event that links a device to a customer merges the device's
        anonymous person into the customer's before the event itself is applied. An event
        whose id this site applied already (under any person) is a duplicate: nothing.
        """
        if not self.applied.add(f"{event.site_id}:{event.event_id}"):
            self.duplicates += 1
            return False
        who = resolve(
            event,
            self.aliases.get(device_key(event.site_id, event.anonymous_id))
            if event.anonymous_id
            else None,
        )
        if who.link_from is not None and who.device is not None:
            self.aliases[who.device] = who.key
            anonymous = self.states.pop(who.link_from, None)
            if anonymous is not None:
                merged, facts = merge(
                    self.states.get(who.key), anonymous, self.config, who.person_id
                )
                self.states[who.key] = merged
                self._buffer(facts)
        state, facts = process(self.states.get(who.key), event, self.config, who.person_id)
        self.states[who.key] = state
        self._buffer(facts)
        self.processed += 1
        if state.outcome == "duplicate":
            self.duplicates += 1
            return False
        return True

    def _buffer(self, facts: list[Fact]) -> None:
        for fact in facts:
            buffer = self._buffers[fact.table]
            buffer.append(fact.row())
            if len(buffer) >= self.batch_size:
                self._write(fact.table)

    def expire(self, now_ms: int | None = None) -> int:
        """The status timer: people whose conversion window expired by ``now_ms`` (default:
        the wall clock) turn ``dropped``; their rows are buffered. Returns how many changed."""
        now = to_millis(self.clock.now()) if now_ms is None else now_ms
        changed = 0
        for key, state in self.states.items():
            due = next_deadline(state, self.config)
            if due is None or due > now:
                continue
            self.states[key], facts = expire(state, now, self.config)
            changed += bool(facts)
            self._buffer(facts)
        return changed

    def submit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.submit(event)

    def flush(self) -> list[Refused]:
        """Write every buffered fact; blocks until the store acknowledged them. Returns the
        rows the store refused for their values since the last flush (dead-lettered)."""
        for table in list(self._buffers):
            self._write(table)
        refused, self._refused = self._refused, []
        return refused

    def _write(self, table: str) -> None:
        # The rows leave the buffer only once the store took them: the persons' states
        # already count these events as seen, so a client's retry would not bring them back.
        # An insert that failed is tried again, with what came since, at the next write.
        rows = self._buffers.get(table)
        if not rows:
            return
        refused = insert_isolating(self.store, table, rows)
        del self._buffers[table]
        if refused:
            self._dead_letter(refused)

    def _dead_letter(self, refused: list[Refused]) -> None:
        self.refused_rows += len(refused)
        self._refused.extend(refused)
        log.warning(
            "the store refused %d %s row(s): %s", len(refused), refused[0].table, refused[0].reason
        )
        now = self.clock.now()
        try:
            self.store.insert("rejected_events", [r.dead_letter(now) for r in refused])
        except StoreError as exc:  # the rows are refused either way; the log keeps them
            log.error("dead-letter write failed for %d refused rows: %s", len(refused), exc)


class GatedPipeline(EmbeddedPipeline):
    """The embedded pipeline whose writes happen in :meth:`flush` only, under the gate.

    Facts are never written while events are submitted (the buffers have no size limit), so
    the store changes only in :meth:`flush`: one commit, which reads (the report API of the
    same process, :mod:`storage.reports.api`) never see half of. The buffers hold one group
    commit (the collector flushes after every group).
    """

    def __init__(
        self, store: Store, config: CoreConfig, gate: CommitGate, *, clock: Clock | None = None
    ) -> None:
        super().__init__(store, config, batch_size=sys.maxsize, clock=clock)
        self.gate = gate

    def flush(self) -> list[Refused]:
        with self.gate.commit():
            return super().flush()
