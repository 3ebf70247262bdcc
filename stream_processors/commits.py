"""Where each input partition is committed: only over records the stages finished, in order.

Faust commits, per partition, the run of offsets its streams acknowledged, and counts as read
the offsets its fetcher took for gaps. Under rebalances (found with
``test_two_workers_land_messy_traffic_exactly_once``, a 6 s session timeout and a busy CPU)
that run passed records no stage had finished, and a restart never read them: one to several
``person-events`` records, 8 to 900 events, lost in most runs. Among the causes, in
faust-streaming 0.15: a stream that takes a message while a rebalance suspends the flow, or
from an older generation, skips it *and acknowledges it*; ``Consumer._new_offset`` lets a run
start one past the committed offset; a revoke forgets the committed offset, and until the
next seek any run is committed; the fetcher's gap bookkeeping counts offsets it skipped as
offsets the topic does not hold.

So the worker keeps the commit position itself, per input partition (:data:`_NEXT`, the next
offset to finish, which is what Kafka commits):

* it starts, at every assignment, at the group's committed offset, or at the log start where
  the group has committed nothing: :func:`install` replaces the seek Faust makes before a
  partition's records flow with one that keeps the offsets it reads, and seeks a partition
  without a commit to its start (Faust and aiokafka leave it wherever the fetches made while
  tables were recovered took it: records a stage never saw, counted as read);
* a batch takes, per partition, only the records that continue it (:func:`admit`). One
  already behind it is skipped (done before); one beyond it means records in between were
  skipped, so the rest of that partition's records in the batch wait, and the partition is
  read again from the position (a seek). A partition is therefore processed in offset order,
  which the sink's dedup by origin relies on (a replayed record re-sends the same facts);
* it moves past a batch's records once the batch's outputs are acknowledged and its state is
  written (:func:`advance`), and only if no rebalance began meanwhile and every record is of
  the current generation (:func:`counts`); else the batch is neither written nor counted and
  goes again;
* Faust's commits (its timer, a revoke, a stop) commit this position, and nothing else.

The input topics are written without transactions (the collector's kafka-python producer,
the workers' own Faust producer), so every offset is a record and the position can always
advance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.consumer import ensure_TP

__all__ = ["Admission", "admit", "advance", "counts", "install", "position"]

log = logging.getLogger(__name__)

_NEXT: dict[Any, int] = {}
"""Per input partition of this worker: the next offset to finish (the offset to commit)."""
_SEEKS: dict[Any, tuple[int, float]] = {}
"""Per partition: the last read-again asked for (offset, monotonic time)."""
_SEEK_AGAIN_S = 5.0
"""A read-again that brought nothing by then is asked for again."""
_INSTALLED = "_funnel_positions"


def position(tp: Any) -> int | None:
    """The next offset of ``tp`` to finish, or None where this worker has not started it."""
    return _NEXT.get(tp)


def counts(app: Any, batch: Sequence[Any]) -> bool:
    """Whether a finished batch may move the position: no rebalance has begun since its records
    were taken, and they are all of the current generation."""
    generation = app.consumer_generation_id
    return bool(app.flow_control.is_active()) and all(
        item.message.generation_id == generation for item in batch
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """What :func:`admit` made of a batch."""

    taken: list[Any]
    """The records to process, in order."""
    again: dict[Any, int]
    """Partitions to read again, from which offset."""
    behind: int
    """Records left out as finished before (a copy delivered again)."""
    ahead: int
    """Records left out because records before them were skipped: they are read again."""


def admit(batch: Sequence[Any], now: float | None = None) -> Admission:
    """The records of ``batch`` to process, and the partitions to read again from where.

    Per partition, the records that continue its position, in order; a record behind it is
    left out (finished before), a record beyond it stops the partition for this batch and
    asks for a read-again from the position (at most every few seconds per position)."""
    now = time.monotonic() if now is None else now
    behind = ahead = 0
    expected: dict[Any, int | None] = {}
    stopped: set[Any] = set()
    taken: list[Any] = []
    seeks: dict[Any, int] = {}
    for item in batch:
        message = item.message
        tp = message.tp
        if tp in stopped:
            ahead += 1
            continue
        at = expected[tp] if tp in expected else _NEXT.get(tp)
        if at is None:  # not started here: no seek has placed the partition yet
            stopped.add(tp)
            ahead += 1
            continue
        if message.offset < at:
            behind += 1
            continue
        if message.offset > at:
            stopped.add(tp)
            ahead += 1
            last = _SEEKS.get(tp)
            if last is None or last[0] != at or now - last[1] >= _SEEK_AGAIN_S:
                _SEEKS[tp] = (at, now)
                seeks[tp] = at
                log.warning(
                    "%s: record %d came where %d was due (skipped in a rebalance); "
                    "reading the partition again from %d",
                    tp, message.offset, at, at,
                )  # fmt: skip
            continue
        expected[tp] = at + 1
        taken.append(item)
    return Admission(taken, seeks, behind, ahead)


def advance(taken: Sequence[Any]) -> None:
    """Move the positions past ``taken`` (records :func:`admit` gave, now finished, of a
    batch that :func:`counts`)."""
    for item in taken:
        message = item.message
        if _NEXT.get(message.tp) == message.offset:
            _NEXT[message.tp] = message.offset + 1


def install() -> None:
    """Make the worker's Faust consumer start the positions at each assignment and commit
    them (once per process)."""
    consumer_cls: Any = faust_consumer.Consumer
    if getattr(consumer_cls, _INSTALLED, False):
        return

    def _new_offset(self: Any, tp: Any) -> int | None:
        at = _NEXT.get(tp)
        acked, index = self._acked[tp], self._acked_index[tp]
        if at is not None:  # Faust's own record of acknowledged offsets: only what is ahead
            acked[:] = [offset for offset in acked if offset >= at]
            index.intersection_update(acked)
        committed = self._committed_offset[tp]
        if at is None or (committed is not None and at <= committed):
            return None
        return at

    async def perform_seek(self: Any) -> None:
        # Faust's own (ConsumerT.perform_seek), keeping the committed offsets it reads
        committed = {ensure_TP(tp): o for tp, o in (await self.seek_to_committed()).items()}
        self._read_offset.update(
            {tp: o if o is not None and o >= 0 else None for tp, o in committed.items()}
        )
        self._committed_offset.update(
            {tp: o if o else None for tp, o in committed.items() if o is not None}
        )
        assigned = self.assignment()
        for tp in list(_NEXT):
            if tp not in assigned:
                del _NEXT[tp]
        inputs = [tp for tp in committed if self.app.topics.acks_enabled_for(tp.topic)]
        # Where the group has committed nothing (or 0), aiokafka does not seek, and records
        # fetched while tables were being recovered have moved its position on: start
        # those partitions at the log start explicitly.
        fresh = [tp for tp in inputs if not committed[tp]]
        starts = {ensure_TP(tp): o for tp, o in (await self.earliest_offsets(*fresh)).items()}
        for tp in fresh:
            await self.seek(tp, starts[tp])
        for tp in inputs:
            _NEXT[tp] = committed[tp] or starts[tp]
            _SEEKS.pop(tp, None)
        log.info(
            "generation %s starts at %s",
            self.app.consumer_generation_id,
            {f"{tp.topic}:{tp.partition}": (committed[tp], _NEXT[tp]) for tp in sorted(_NEXT)},
        )

    consumer_cls._new_offset = _new_offset
    consumer_cls.perform_seek = perform_seek
    setattr(consumer_cls, _INSTALLED, True)
