"""The embedded runner: the pure core in this process, facts batched into a store.

Used by ``funnel demo`` (and, later, ``funnel serve``). It calls the same
:func:`funnel.processor.process` as the Faust agent, so both modes produce the same facts.

Contract: :meth:`EmbeddedPipeline.submit` takes each person's events in their order; facts
are buffered per table and written when a buffer reaches ``batch_size`` or on
:meth:`EmbeddedPipeline.flush`. After ``flush`` returns, every fact submitted so far is in the
store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from funnel.events import Event
from funnel.processor import CoreConfig, PersonState, process
from storage.backends import Store

__all__ = ["EmbeddedPipeline"]


class EmbeddedPipeline:
    """Process events in-process and land the facts in ``store``."""

    def __init__(self, store: Store, config: CoreConfig, *, batch_size: int = 20_000) -> None:
        self.store = store
        self.config = config
        self.batch_size = batch_size
        self.states: dict[str, PersonState] = {}
        self._buffers: dict[str, list[dict[str, object]]] = defaultdict(list)
        self.processed = 0

    def submit(self, event: Event) -> None:
        """Apply one event and buffer its facts (a full buffer is written at once)."""
        key = event.partition_key
        state, facts = process(self.states.get(key), event, self.config)
        self.states[key] = state
        for fact in facts:
            buffer = self._buffers[fact.table]
            buffer.append(fact.row())
            if len(buffer) >= self.batch_size:
                self._write(fact.table)
        self.processed += 1

    def submit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.submit(event)

    def flush(self) -> None:
        """Write every buffered fact; blocks until the store acknowledged them."""
        for table in list(self._buffers):
            self._write(table)

    def _write(self, table: str) -> None:
        rows = self._buffers.pop(table, [])
        if rows:
            self.store.insert(table, rows)
