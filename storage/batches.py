"""The sink's batches: records of each topic-partition, cut by size, by age, or at a plan.

Pure bookkeeping (no Kafka, no store, time passed in), so the cut rules are tested alone.

Contract, per topic-partition (``tp``):

* records are added in offset order and cut from the front: a batch is a contiguous run of
  the records polled, ``first``..``last``;
* a batch is due when it holds ``max_rows`` records (then it is exactly the first
  ``max_rows``), or when its oldest record has waited ``max_age_s`` (then it is everything
  buffered);
* a **plan** fixes the next batch to end at ``last``: the sink records the range of a batch
  (in Kafka, with the commit, see :mod:`storage.sink`) before inserting it, and a replay
  after a crash cuts at the same offset, so it gets the same deduplication token. A planned
  batch is due once a record at or past ``last`` is buffered, or when it is old and the
  consumer has fetched past ``last`` (records removed by compaction leave gaps);
* :meth:`PartitionBatches.peek` does not remove anything: a batch whose insert failed is
  peeked again, the same; :meth:`PartitionBatches.done` removes it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Cut", "PartitionBatches", "Record"]


class Record(Protocol):
    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Cut:
    """One batch of one topic-partition: ``records`` from ``first`` to ``last`` (inclusive;
    ``first`` and ``last`` are the planned range, which compaction may have thinned)."""

    first: int
    last: int
    records: Sequence[Record]
    planned: bool


@dataclass(slots=True)
class _Buffer:
    records: list[Record] = field(default_factory=list)
    since: float = 0.0
    """When the oldest buffered record was added."""
    plan: tuple[int, int] | None = None


class PartitionBatches:
    """Per topic-partition buffers of polled records (see the module docstring)."""

    def __init__(self, max_rows: int, max_age_s: float) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._buffers: dict[Hashable, _Buffer] = {}

    def __len__(self) -> int:
        """Records buffered, over every partition (the sink's memory bound)."""
        return sum(len(b.records) for b in self._buffers.values())

    def add(self, tp: Hashable, records: Sequence[Record], now: float) -> None:
        if not records:
            return
        buffer = self._buffers.setdefault(tp, _Buffer())
        if not buffer.records:
            buffer.since = now
        buffer.records.extend(records)

    def plan(self, tp: Hashable, first: int, last: int) -> None:
        """The next batch of ``tp`` is ``first``..``last``, whatever arrives meanwhile."""
        self._buffers.setdefault(tp, _Buffer()).plan = (first, last)

    def planned(self, tp: Hashable) -> tuple[int, int] | None:
        buffer = self._buffers.get(tp)
        return buffer.plan if buffer else None

    def due(self, now: float, fetched: dict[Hashable, int] | None = None) -> list[Hashable]:
        """The partitions with a batch to insert now. ``fetched`` maps a partition to the
        offset after the last one the consumer fetched (only needed for planned cuts)."""
        ready = []
        for tp, buffer in self._buffers.items():
            if not buffer.records:
                continue
            old = now - buffer.since >= self.max_age_s
            if buffer.plan is not None:
                last = buffer.plan[1]
                if buffer.records[-1].offset >= last or (
                    old and fetched is not None and fetched.get(tp, -1) > last
                ):
                    ready.append(tp)
            elif old or len(buffer.records) >= self.max_rows:
                ready.append(tp)
        return ready

    def peek(self, tp: Hashable) -> Cut:
        """The batch :meth:`due` found for ``tp`` (not removed)."""
        buffer = self._buffers[tp]
        if buffer.plan is not None:
            first, last = buffer.plan
            records = [r for r in buffer.records if first <= r.offset <= last]
            return Cut(first, last, records, planned=True)
        records = buffer.records[: self.max_rows]
        return Cut(records[0].offset, records[-1].offset, records, planned=False)

    def done(self, tp: Hashable, cut: Cut, now: float) -> None:
        """``cut`` is landed: forget its records (and its plan)."""
        buffer = self._buffers[tp]
        buffer.records = [r for r in buffer.records if r.offset > cut.last]
        buffer.plan = None
        if buffer.records:
            buffer.since = now

    def drop(self, tp: Hashable) -> None:
        """Forget ``tp`` (revoked: its records come back from the committed offset)."""
        self._buffers.pop(tp, None)

    def next_deadline(self) -> float | None:
        """When the oldest buffered batch comes of age (``None``: nothing buffered)."""
        times = [b.since for b in self._buffers.values() if b.records]
        return min(times) + self.max_age_s if times else None
