"""The embedded runner: the runtime in this process, its facts landed in a store.

Used by ``funnel demo`` and ``funnel serve``. A thin host of :mod:`funnel.runtime` (the same
orchestration the Kafka worker runs): it opens a batch over the saved state
(:class:`stream_processors.state.SavedState`, durable in the store directory for ``serve``
and ``demo``), submits events, and on :meth:`EmbeddedPipeline.flush` commits the batch —
state changes and facts together through the outbox — and lands the facts.

A poison event (one the runtime raises on: a bug's trigger) goes to ``rejected_events`` with
the runtime's reason (code ``runtime_error``) and :meth:`flush` returns it with the refused
rows, so the collector answers it as refused; the rest go on. The runtime changes cached
person states in place, so the batch is dropped, the cache is read again from the durable
state, and the batch's other steps run again (an in-memory state has no copy to go back to:
there the error propagates).

Contract: :meth:`EmbeddedPipeline.submit` takes each person's events in their order. After
``flush`` returns, every fact submitted so far is in the store and the state that counts
their events is saved. A write the store cannot take now raises
:class:`~storage.backends.StoreError` and keeps the facts in the outbox: the next flush lands
them first, so a client's retry (recognised as a duplicate by the saved state) is answered
only once they are stored. Rows the store refuses for their values (:mod:`storage.poison`)
are not retried: the rest lands, they go to ``rejected_events`` with the store's reason, and
:meth:`flush` returns them, so one bad value never blocks the next writes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from funnel.clock import Clock, SystemClock, to_millis
from funnel.events import Event
from funnel.intake import POISON, runtime_error
from funnel.processor import CoreConfig, PersonState
from funnel.runtime import Batch
from storage.backends import Store, StoreError
from storage.fact_columns import fact_blocks
from storage.gate import CommitGate
from storage.poison import Refused, insert_isolating
from stream_processors.state import Outbox, SavedState

__all__ = ["EmbeddedPipeline", "GatedPipeline"]

log = logging.getLogger(__name__)

_Landed = tuple[list[tuple[Outbox, str, list[Refused]]], StoreError | None]
"""What a landing did: the entries that landed (token, rows refused), and its failure."""


class EmbeddedPipeline:
    """Process events in-process and land the facts in ``store``.

    ``saved`` is the state to continue from (default: a new one in memory). A batch is
    committed when its facts reach ``batch_size`` rows, and on :meth:`flush`. A batch
    committed because it was full lands behind the next one: a thread inserts its blocks
    while this one processes the next batch (the store's engine runs without Python's
    lock), at most one batch in flight. :meth:`flush` lands everything before it returns.
    """

    def __init__(
        self,
        store: Store,
        config: CoreConfig,
        *,
        saved: SavedState | None = None,
        batch_size: int = 20_000,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.config = config
        self.batch_size = batch_size
        self.saved = saved if saved is not None else SavedState(config=config)
        self.batch = Batch(config, self.saved)
        self._refused: list[Refused] = []
        self._lander: ThreadPoolExecutor | None = None
        self._landing: Future[_Landed] | None = None
        self.processed = 0
        self.duplicates = 0
        """Events dropped because their site and id were applied before."""
        self.refused_rows = 0
        """Rows the store refused for their values (dead-lettered), since the start."""
        self.poisoned = 0
        """Events the runtime raised on (dead-lettered), since the start."""
        self._steps: list[Event | tuple[list[str], int]] = []
        """The batch's steps so far (events, and timer runs: keys and time), to run again."""
        self._poison: list[Refused] = []
        """Poison events not dead-lettered yet."""

    def submit(self, event: Event) -> bool:
        """Apply one event (identity, merges, dedup: :meth:`funnel.runtime.Batch.submit`);
        ``False`` when it was a duplicate (nothing applied) or poison (module docstring)."""
        self.processed += 1
        try:
            applied = self.batch.submit(event)
        except Exception as exc:
            self._isolate(event, exc)
            return False
        self._steps.append(event)
        self.duplicates += not applied
        if len(self.batch.changes.facts) >= self.batch_size:
            self._commit()
            self._land(behind=True)
        return applied

    def submit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.submit(event)

    def person(self, key: str) -> PersonState | None:
        """A person's current state (as this batch sees it)."""
        return self.batch.person(key)

    def persons(self) -> dict[str, PersonState]:
        """Every person in memory, as this batch sees them (see :meth:`SavedState.persons`)."""
        view = dict(self.saved.persons())
        for key, state in self.batch.changes.persons.items():
            if state is None:
                view.pop(key, None)
            else:
                view[key] = state
        return view

    def expire(self, now_ms: int | None = None) -> int:
        """The status timer: people whose conversion window expired by ``now_ms`` (default:
        the wall clock) turn ``dropped``, leads whose reason lapsed cool. Returns how many
        changed; their facts go with the batch."""
        now = to_millis(self.clock.now()) if now_ms is None else now_ms
        keys = dict.fromkeys(self.saved.due(now))
        keys.update(dict.fromkeys(self.batch.due(now)))
        self._steps.append((list(keys), now))
        return self.batch.expire(keys, now)

    def _isolate(self, event: Event, exc: Exception) -> None:
        """``event`` made the runtime raise: dead-letter it, and run the batch again from
        the committed state without it (module docstring)."""
        if not self.saved.durable:
            raise exc
        log.error("the runtime raised on event %s: dead-lettered", event.event_id, exc_info=exc)
        row = event.model_dump(mode="json", exclude_none=True)
        self._poison.append(Refused("events", row, runtime_error(exc)["reason"], POISON))
        self.poisoned += 1
        self.saved.drop_cache()
        steps, self._steps = self._steps, []
        self.batch = Batch(self.config, self.saved)
        for step in steps:
            if isinstance(step, Event):
                self.batch.submit(step)
            else:
                self.batch.expire(*step)
        self._steps = steps

    def flush(self) -> list[Refused]:
        """Commit the batch (state and facts, :mod:`stream_processors.state`) and land every
        pending fact; blocks until the store acknowledged them. Returns the rows the store
        refused for their values and the poison events since the last flush (dead-lettered)."""
        self._commit()
        self._land(behind=False)
        self._dead_letter_poison()
        refused, self._refused = self._refused, []
        return refused

    def _dead_letter_poison(self) -> None:
        """Write the poison events' dead letters (each under a token of its own, so that the
        same event poisoned again after a failed write is recorded once)."""
        while self._poison:
            letter = self._poison[0]
            at = letter.row.get("received_at")
            received = datetime.fromisoformat(str(at)) if at else self.clock.now()
            token = f"poison:{letter.row.get('site_id')}:{letter.row.get('event_id')}"
            self.store.insert("rejected_events", [letter.dead_letter(received)], dedup_token=token)
            self._refused.append(self._poison.pop(0))

    def close(self) -> None:
        """Stop the landing thread (what it holds lands first; :meth:`flush` lands the rest)."""
        if self._lander is not None:
            with contextlib.suppress(StoreError):
                self._settle()
            self._lander.shutdown()
            self._lander = None

    def _commit(self) -> None:
        changes = self.batch.close()
        if changes:
            self.saved.commit(changes, fact_blocks(changes.facts))
        self.batch = Batch(self.config, self.saved)
        self._steps = []

    def _land(self, *, behind: bool) -> None:
        """Insert the pending outbox entries: now, or (``behind``) in the landing thread.
        The entry in flight is settled first; a write it could not make raises here."""
        self._settle()
        entries = self.saved.pending()
        if not entries:
            return
        if not behind:
            self._settled(self._insert(entries))
            return
        if self._lander is None:
            self._lander = ThreadPoolExecutor(1, thread_name_prefix="funnel-lander")
        self._landing = self._lander.submit(self._insert, entries)

    def _insert(self, entries: list[Outbox]) -> _Landed:
        """Insert ``entries`` in order until one fails: what landed (with the rows the store
        refused for their values), and the failure. Touches the store only, so that it may
        run in the landing thread; the saved state is settled by the caller's thread."""
        landed: list[tuple[Outbox, str, list[Refused]]] = []
        for entry in entries:
            token = self.saved.token(entry)
            try:
                refused = insert_isolating(self.store, entry.table, entry.rows, dedup_token=token)
            except StoreError as exc:
                return landed, exc
            landed.append((entry, token, refused))
        return landed, None

    def _settle(self) -> None:
        """Wait for the entries in flight and mark what landed."""
        landing, self._landing = self._landing, None
        if landing is not None:
            self._settled(landing.result())

    def _settled(self, result: _Landed) -> None:
        landed, failure = result
        for entry, token, refused in landed:
            if refused:
                self._dead_letter(refused, token)
            self.saved.landed(entry)
        if failure is not None:
            raise failure

    def _dead_letter(self, refused: list[Refused], token: str) -> None:
        self.refused_rows += len(refused)
        self._refused.extend(refused)
        log.warning(
            "the store refused %d %s row(s): %s", len(refused), refused[0].table, refused[0].reason
        )
        now = self.clock.now()
        try:
            rows = [r.dead_letter(now) for r in refused]
            self.store.insert("rejected_events", rows, dedup_token=f"{token}/refused")
        except StoreError as exc:  # the rows are refused either way; the log keeps them
            log.error("dead-letter write failed for %d refused rows: %s", len(refused), exc)


class GatedPipeline(EmbeddedPipeline):
    """The embedded pipeline whose writes happen in :meth:`flush` only, under the gate.

    Facts are never written while events are submitted (no batch size limit), so the store
    changes only in :meth:`flush`: one commit, which reads (the report API of the same
    process, :mod:`storage.reports.api`) never see half of. A batch holds one group commit
    (the collector flushes after every group).
    """

    def __init__(
        self,
        store: Store,
        config: CoreConfig,
        gate: CommitGate,
        *,
        saved: SavedState | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(store, config, saved=saved, batch_size=sys.maxsize, clock=clock)
        self.gate = gate

    def flush(self) -> list[Refused]:
        with self.gate.commit():
            return super().flush()
