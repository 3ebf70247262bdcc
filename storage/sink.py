"""The sink (``funnel sink``): facts topics → ClickHouse, each fact landed once.

One consumer (kafka-python) reads every facts topic and the dead letters (the ``rejected``
topic: the collector's refusals and the workers' rejected and poison events, landed in
``rejected_events``); records are batched per topic-partition
(:class:`storage.batches.PartitionBatches`: ``max_rows`` records, or what waited
``max_age_s``) and each batch is one insert into the table the topic names
(:meth:`funnel.topics.TopicNames.table_of`), through :class:`storage.backends.Store`
(the same code for the embedded and the server store).

Per batch ``first..last`` of a topic-partition, in this order:

1. **plan**: commit offset ``first`` with metadata ``plan:<last>`` (the position does not
   move past anything unlanded; the range is now recorded in Kafka);
2. **insert** the batch's fresh rows with ``insert_deduplication_token =
   "<topic>:<partition>:<first>:<last>"`` (followed by ``:<digest of their fact ids>`` when
   some rows were left out as landed: other rows than the first try's get a token of their
   own); blocks until the store acknowledged it;
3. **commit** ``last + 1`` (plan cleared).

Exactly once, and what covers what:

* *The sink crashes between 2 and 3* (or loses the partition): whoever consumes the partition
  next reads the plan with the committed offset and cuts its first batch at the same
  ``last``, so the replay carries the same token and ClickHouse drops it — for the tables
  with a deduplication window (``non_replicated_deduplication_window``; all fact tables but
  ``persons``).
* *Facts re-sent by the stream* (a worker replays what it had not committed) arrive at new
  offsets, so no token can recognise them: they carry the **origin** of their first copy
  (:mod:`storage.origin`: the ``person-events`` record that caused them and their place
  among its facts), and the sink drops a fact at or below the highest origin it landed from
  that origin partition (the topic-partition's :class:`~storage.origin.Watermarks`,
  committed with its offsets as commit metadata: a restarted sink or the partition's next
  owner reads them back with the offset — a few numbers per partition, not the ids of every
  row landed). The insert token of a batch some of whose facts were dropped so is the
  batch's token followed by a digest of the kept facts' origins.
* An ``events`` row is stored once per site and event id, whichever person it reached: the
  sink also drops an ``events`` row whose ``fact_id`` it landed before (in this process;
  :class:`~funnel.dedup.BoundedIds`). That check is not part of the token, so a replayed
  batch is recognised whatever this process remembers.
* A dead letter a worker re-sent after a crash has the ``rejection_id`` of its first copy
  (the input's position): the sink drops one it landed before (in this process, as the
  ``events`` rows' ids). A poison event's letter carries an origin, as a fact does.
* Facts without an origin are covered by the token only: ``persons`` rows (its
  ReplacingMergeTree keeps the latest version per person: a replayed row is the same
  version) and the records of other producers.

Failures: :class:`~storage.backends.StoreUnavailable` is backpressure: the sink pauses every
partition it holds (no more fetching, so memory stays within the buffered batches), keeps
polling (the group keeps its member; ``max_poll_interval_ms`` is never exceeded), and
retries the same planned batches after an exponential backoff, for as long as it takes;
when an insert succeeds it resumes. Rows the store refuses for their values
(:mod:`storage.poison`) are not retried: the rest of the batch lands, they go to
``rejected_events`` with the store's reason (``funnel_sink_refused_rows_total``), and the
offsets move on, so one bad fact never crash-loops the sink. Any other
:class:`~storage.backends.StoreError` is retried the same way ``max_errors`` times in a
row, then raised (the process ends; a restart replays from the committed offsets). Nothing
is committed past a batch not landed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no annotations
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from funnel.dedup import BoundedIds
from funnel.topics import REJECTED_TABLE, TopicNames
from storage import origin
from storage.backends import Store, StoreError, StoreUnavailable
from storage.batches import Cut, PartitionBatches
from storage.fact_columns import Block
from storage.poison import Refused, insert_isolating
from storage.sink_metrics import SinkMetrics

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_ROWS",
    "Backoff",
    "Backpressure",
    "Sink",
    "fresh_block",
]

log = logging.getLogger(__name__)

#: Rows per insert. ``benchmarks/bench_sink.py``: chDB's cost per insert is ~10-40 ms (parts,
#: views), so rows/s grow up to ~50k rows per insert and little beyond.
DEFAULT_MAX_ROWS = 50_000
#: A partial batch waits at most this long: facts reach the tables within about a second.
DEFAULT_MAX_AGE_S = 1.0

_PLAN = "plan:"
_MARKS = "marks:"
_IPC = b"\xff\xff\xff\xff"
"""The first bytes of an Arrow IPC stream (a continuation marker): a record holding a block."""
_LAG_EVERY_S = 5.0
_OFFSET_TIMEOUT_MS = 10_000
"""How long to wait for a partition's committed offset before asking again at a next poll
(the broker may be away: without a bound the client waits for it for good)."""


@dataclass(slots=True)
class Fresh:
    """What of a batch to insert (see :meth:`Sink._land`)."""

    rows: Sequence[dict[str, Any]] | Block
    total: int
    """Rows in the batch."""
    digest: str
    """Of the kept rows' origins, when the origins dropped some (else empty): part of the
    insert token."""
    marks: origin.Watermarks
    """The watermarks once these rows landed."""
    event_ids: list[str]
    """The kept ``events`` rows' fact ids (remembered once landed)."""


def fresh_block(
    arrow: pa.Table, marks: origin.Watermarks, landed: BoundedIds | None = None
) -> Fresh:
    """A block's rows that are not at or below their origin's watermark (nor repeated within
    it), without the origin columns; with ``landed``, also without the ``fact_id`` values in
    it (the ``events`` table's ids)."""
    keep, after = origin.fresh_by_origin(*_block_origins(arrow), marks)
    return _select_block(arrow, keep, after, landed)


def fresh_rows(
    rows: list[dict[str, Any]],
    origins: Sequence[tuple[int, int]],
    marks: origin.Watermarks,
    landed: BoundedIds | None = None,
) -> Fresh:
    """:func:`fresh_block` for JSON rows, ``origins`` being theirs (``(-1, -1)``: none)."""
    parts, seqs = [p for p, _ in origins], [s for _, s in origins]
    keep, after = origin.fresh_by_origin(parts, seqs, marks)
    return _select_rows(rows, origins, keep, after, landed)


def _block_origins(arrow: pa.Table) -> tuple[pa.Array, pa.Array]:
    if origin.SEQ not in arrow.column_names:
        none = pa.array([-1] * arrow.num_rows, pa.int64())
        return none, none
    parts = arrow.column(origin.PARTITION).combine_chunks()
    return parts, arrow.column(origin.SEQ).combine_chunks()


def _select_block(
    arrow: pa.Table, keep: pa.Array | None, after: origin.Watermarks, landed: BoundedIds | None
) -> Fresh:
    total, digest = arrow.num_rows, ""
    if keep is not None:
        arrow = arrow.filter(keep)
        digest = _digest(*(a.to_pylist() for a in _block_origins(arrow)))
    if origin.SEQ in arrow.column_names:
        arrow = arrow.drop_columns([origin.PARTITION, origin.SEQ])
    ids: list[str] = []
    if landed is not None:
        unseen, ids = _unseen(arrow.column("fact_id").to_pylist(), landed)
        if len(ids) != arrow.num_rows:
            arrow = arrow.filter(pa.array(unseen, pa.bool_()))
    return Fresh(Block(arrow), total, digest, after, ids)


def _select_rows(
    rows: list[dict[str, Any]],
    origins: Sequence[tuple[int, int]],
    keep: pa.Array | None,
    after: origin.Watermarks,
    landed: BoundedIds | None,
) -> Fresh:
    total, digest = len(rows), ""
    if keep is not None:
        kept = keep.to_pylist()
        rows = [row for row, k in zip(rows, kept, strict=True) if k]
        origins = [o for o, k in zip(origins, kept, strict=True) if k]
        digest = _digest([p for p, _ in origins], [s for _, s in origins])
    ids: list[str] = []
    if landed is not None:
        unseen, ids = _unseen((row.get("fact_id") for row in rows), landed)
        rows = [row for row, k in zip(rows, unseen, strict=True) if k]
    return Fresh(rows, total, digest, after, ids)


def _letter(record: dict[str, Any]) -> dict[str, Any]:
    """A dead-letter record (:meth:`funnel.intake.Rejection.row`, from the collector or a
    worker) as a ``rejected_events`` row; its ``rejection_id`` (a worker's: the input's
    position) as the ``fact_id`` by which a copy re-sent after a crash is dropped."""
    letter = {name: record.get(name) for name in ("received_at", "site_id", "reason", "payload")}
    letter["site_id"] = letter["site_id"] or ""
    if record.get("rejection_id"):
        letter["fact_id"] = f"rejection:{record['rejection_id']}"
    return letter


def _digest(partitions: Sequence[int], seqs: Sequence[int]) -> str:
    text = ",".join(f"{p}:{s}" for p, s in zip(partitions, seqs, strict=True))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _unseen(fact_ids: Iterable[str | None], landed: BoundedIds) -> tuple[list[bool], list[str]]:
    """Per row, whether to keep it (no fact id, or one neither landed nor seen before in these
    rows), and the kept rows' fact ids."""
    keep, ids, seen = [], [], set()
    for fact_id in fact_ids:
        fresh = not fact_id or (fact_id not in landed and fact_id not in seen)
        keep.append(fresh)
        if fresh and fact_id:
            seen.add(fact_id)
            ids.append(fact_id)
    return keep, ids


def _metadata(marks: origin.Watermarks, plan: int | None = None) -> str:
    """Commit metadata: the planned last offset (if any) and the watermarks."""
    text = f"{_MARKS}{marks.encode()}"
    return f"{_PLAN}{plan} {text}" if plan is not None else text


def _parse_metadata(text: str) -> tuple[int | None, origin.Watermarks]:
    plan, marks = None, origin.Watermarks()
    for part in text.split():
        if part.startswith(_PLAN):
            plan = int(part[len(_PLAN) :])
        elif part.startswith(_MARKS):
            marks = origin.Watermarks.decode(part[len(_MARKS) :])
    return plan, marks


class Backpressure(Exception):  # a signal more than an error, as quix-streams' backpressure
    """The store refused a batch; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float, cause: StoreError) -> None:
        super().__init__(f"store refused a batch ({cause}); retry in {retry_after:.1f} s")
        self.retry_after = retry_after
        self.cause = cause


@dataclass(slots=True)
class Backoff:
    """Exponential backoff: ``initial_s``, doubled per failure, at most ``max_s``."""

    initial_s: float = 0.2
    max_s: float = 10.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.initial_s * 2.0**self.failures, self.max_s)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.sink._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.sink._on_assigned(assigned)


class Sink:
    """Consume the facts topics and insert them into ``store``, each fact once.

    Single-threaded: :meth:`poll_once` (or :meth:`run_forever`) does the polling, the
    inserts and the commits; ``clock`` is a monotonic clock in seconds. ``instance_id``
    (unique per running sink) makes the member static: a restart keeps the assignment.
    """

    def __init__(
        self,
        store: Store,
        *,
        bootstrap_servers: str,
        group_id: str = "funnel-sink",
        instance_id: str | None = None,
        topics: TopicNames | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        poll_timeout_ms: int = 500,
        max_landed_ids: int = 2_000_000,
        backoff: Backoff | None = None,
        max_errors: int = 5,
        clock: Callable[[], float] = time.monotonic,
        consumer_config: dict[str, Any] | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or SinkMetrics()
        self._lag_at = 0.0
        self.names = topics or TopicNames()
        self.poll_timeout_ms = poll_timeout_ms
        self.backoff = backoff or Backoff()
        self.max_errors = max_errors
        self.clock = clock
        self.batches = PartitionBatches(max_rows, max_age_s)
        self.rows_written = 0
        self.duplicates_dropped = 0
        self.inserts = 0
        self.refusals = 0
        """Inserts the store refused (each retried later)."""
        self.refused_rows = 0
        """Rows the store refused on their own (dead-lettered, not retried)."""
        self.rebalances = 0
        self.landed = BoundedIds(max_landed_ids)
        """The ``events`` rows' fact ids and the dead letters' ids landed by this process."""
        self.marks: dict[Hashable, origin.Watermarks] = {}
        """Per topic-partition held, the watermarks of what landed (:mod:`storage.origin`)."""
        self._errors = 0
        self._retry_at: float | None = None
        self._assigned: set[TopicPartition] = set()
        self._fetched: dict[Hashable, int] = {}
        self._uncommitted: dict[Any, OffsetAndMetadata] = {}
        """Offsets of landed batches whose commit failed (the broker away): committed at a
        next poll, or the group would stay short of them until that partition gets a record."""
        self._consumer: Any = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="funnel-sink",
            # Static membership: a sink restarted under the same instance id takes its
            # partitions back at once, not after the dead member's session times out.
            group_instance_id=instance_id,
            **(consumer_config or {}),
        )
        self._consumer.subscribe(self.names.landed, listener=_Listener(self))

    @property
    def paused(self) -> bool:
        """Whether the sink holds back (the store refused its last insert)."""
        return self._retry_at is not None

    def poll_once(self) -> int:
        """Poll, then insert and commit every due batch; return the rows written.

        Blocks at most ``poll_timeout_ms`` in the poll (less when a batch comes of age or a
        retry is due) plus the inserts. While paused it polls (fetching nothing) until the
        retry is due.
        """
        now = self.clock()
        timeout = self.poll_timeout_ms / 1000
        deadline = self._retry_at if self._retry_at is not None else self.batches.next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - now))
        try:
            polled = self._consumer.poll(
                timeout_ms=int(timeout * 1000), max_records=self.batches.max_rows
            )
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # kafka-python 3.0 lets a connection error out of the poll when the broker goes
            # away while the group is joined again (a restart): the next poll goes on.
            log.warning("poll failed, the broker is unavailable: %s", exc)
            polled = {}
        now = self.clock()
        if self._assigned:
            polled = self._restart_assigned(polled)
        if self._uncommitted and self._commit(self._uncommitted):
            self._uncommitted = {}
        for tp, records in polled.items():
            if records:
                self.batches.add(tp, records, now)
                self._fetched[tp] = records[-1].offset + 1
        if now - self._lag_at >= _LAG_EVERY_S:
            self._lag_at = now
            self._report_lag()
        if self._retry_at is not None and now < self._retry_at:
            return 0
        try:
            written = self._flush(now)
        except Backpressure as exc:
            self._hold_back(exc)
            return 0
        if self._retry_at is not None:
            self._retry_at = None
            self._consumer.resume(*self._consumer.paused())
            self.metrics.paused.set(0)
            log.info("store back: resumed")
        self._errors = 0
        self.backoff.reset()
        return written

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Land batches until ``stop`` is set (or forever); closes the consumer at the end.

        Batches buffered but not yet due are not inserted at the stop: they are not
        committed either, and the next run reads them again.
        """
        try:
            while stop is None or not stop.is_set():
                self.poll_once()
        finally:
            self.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Land facts in a thread of this process for the duration of the block (closed at
        its end, as :meth:`run_forever` closes)."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run_forever, args=(stop,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=60)

    def close(self) -> None:
        self._consumer.close()

    def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Their buffered records are not committed: the next owner reads them again.
        for tp in revoked:
            self.batches.drop(tp)
            self._fetched.pop(tp, None)
            self.marks.pop(tp, None)
            self._uncommitted.pop(tp, None)  # the next owner replays it (its plan dedups)
            self._assigned.discard(tp)  # one still waiting for its offset (_restart_assigned)

    def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Handled after the poll returns (_restart_assigned): no blocking calls in here.
        self.rebalances += 1
        self._assigned.update(assigned)

    def _restart_assigned(self, polled: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """Start each newly assigned partition at its committed offset, with its plan.

        kafka-python keeps the position of a partition assigned again, past records dropped
        at the revocation, so every assigned partition is moved back to its committed offset
        (the beginning if none), and what this poll returned for it is read again. The
        watermarks committed with the offset come back with it.
        """
        waiting: set[TopicPartition] = set()
        for tp in sorted(self._assigned):
            self.batches.drop(tp)
            self._fetched.pop(tp, None)
            self._uncommitted.pop(tp, None)  # read again from the committed offset
            if waiting:  # the broker is away: the others wait as well
                waiting.add(tp)
                continue
            try:
                committed = self._consumer.committed(
                    tp, metadata=True, timeout_ms=_OFFSET_TIMEOUT_MS
                )
            except KafkaError as exc:
                if not (exc.retriable or isinstance(exc, KafkaTimeoutError)):
                    raise
                # The broker went away meanwhile (a restart causes the rebalance): nothing of
                # the partition is taken until its offset is known, at a next poll.
                log.warning("committed offsets unknown for now (%s): %s", tp, exc)
                waiting.add(tp)
                continue
            if committed is None:
                self.marks[tp] = origin.Watermarks()
                self._consumer.seek_to_beginning(tp)
                continue
            self._consumer.seek(tp, committed.offset)
            plan, self.marks[tp] = _parse_metadata(committed.metadata or "")
            if plan is not None:
                self.batches.plan(tp, committed.offset, plan)
        restarted, self._assigned = self._assigned - waiting, waiting
        if self._retry_at is not None:
            self._consumer.pause(*restarted)
        return {
            tp: records for tp, records in polled.items() if tp not in self._assigned | restarted
        }

    def _flush(self, now: float) -> int:
        """Plan, insert and commit every due batch (see the module docstring)."""
        due = self.batches.due(now, self._fetched)
        if not due:
            return 0
        cuts = {tp: self.batches.peek(tp) for tp in due}
        plans = {
            tp: OffsetAndMetadata(cut.first, _metadata(self._marks(tp), cut.last), -1)
            for tp, cut in cuts.items()
            if not cut.planned
        }
        if plans and not self._commit(plans):
            return 0
        for tp in plans:  # the plan's commit replaces an older one that failed
            self._uncommitted.pop(tp, None)
        for tp, cut in cuts.items():
            if not cut.planned:
                self.batches.plan(tp, cut.first, cut.last)
        landed: dict[Any, OffsetAndMetadata] = {}
        written = 0
        try:
            for tp, cut in cuts.items():
                written += self._land(tp, cut)
                self.batches.done(tp, cut, now)
                landed[tp] = OffsetAndMetadata(cut.last + 1, _metadata(self._marks(tp)), -1)
        finally:
            if landed:
                offsets = {**self._uncommitted, **landed}
                self._uncommitted = {} if self._commit(offsets) else offsets
        return written

    def _marks(self, tp: Hashable) -> origin.Watermarks:
        return self.marks.setdefault(tp, origin.Watermarks())

    def _land(self, tp: TopicPartition, cut: Cut) -> int:
        """Insert ``cut``'s fresh rows; :class:`Backpressure` if the store refuses them.

        A record is one fact as JSON, or a typed block of facts (Arrow IPC, the worker's
        ``events``, ``stage_reached`` and ``attributions``): the blocks of a cut are joined
        and inserted as they are, without row dicts. A cut holding both (a worker upgraded
        while records of the older one were in flight) is two inserts."""
        # A tombstone (no value: funnel forget erased the person) has nothing to land.
        records = [r for r in cut.records if r.value is not None]
        texts = [r for r in records if r.value[:4] != _IPC]
        blocks = [r.value for r in records if r.value[:4] == _IPC]
        table = self.names.table_of(tp.topic)
        landed = self.landed if table == "events" else None
        token = f"{tp.topic}:{tp.partition}:{cut.first}:{cut.last}"
        # The cut's watermarks are set once all of it landed: a retry starts where the first
        # try started, and keeps the same rows.
        marks = self._marks(tp)
        rows: list[dict[str, Any]] = []
        origins: list[tuple[int, int]] = []
        if texts:
            # One json.loads for the batch: faster, and the rows share their key objects,
            # which the store's Arrow path compares per row.
            rows = json.loads(b"[" + b",".join(r.value for r in texts) + b"]")
            origins = [origin.origin_of(getattr(r, "headers", None)) for r in texts]
        if table == REJECTED_TABLE:
            rows = [_letter(row) for row in rows]
            landed = self.landed
        arrows = [Block.from_ipc(v).arrow for v in blocks]
        joined = pa.concat_tables(arrows) if arrows else None
        if joined is None:
            fresh = fresh_rows(rows, origins, marks, landed)
            written = self._insert(table, fresh, token)
        elif not texts:
            fresh = fresh_block(joined, marks, landed)
            written = self._insert(table, fresh, token)
        else:
            sizes = iter(a.num_rows for a in arrows)
            fresh, fresh_blocks = self._mixed(records, sizes, rows, origins, joined, marks, landed)
            written = self._insert(table, fresh, f"{token}:rows")
            written += self._insert(table, fresh_blocks, f"{token}:blocks")
        self.marks[tp] = fresh.marks
        return written

    @staticmethod
    def _mixed(
        records: list[Any],
        sizes: Iterator[int],
        rows: list[dict[str, Any]],
        origins: list[tuple[int, int]],
        joined: pa.Table,
        marks: origin.Watermarks,
        landed: BoundedIds | None,
    ) -> tuple[Fresh, Fresh]:
        """A cut of JSON and block records (a worker upgraded while records of the older one
        were in flight): one pass over the origins in record order, then two parts."""
        block_parts, block_seqs = (a.to_pylist() for a in _block_origins(joined))
        parts: list[int] = []
        seqs: list[int] = []
        is_block: list[bool] = []
        texts, at = iter(origins), 0
        for record in records:
            if record.value[:4] == _IPC:
                n = next(sizes)  # the rows of this block record, in record order
                parts += block_parts[at : at + n]
                seqs += block_seqs[at : at + n]
                is_block += [True] * n
                at += n
            else:
                p, s = next(texts)
                parts.append(p)
                seqs.append(s)
                is_block.append(False)
        keep, after = origin.fresh_by_origin(parts, seqs, marks)
        if keep is None:
            return (
                _select_rows(rows, origins, None, after, landed),
                _select_block(joined, None, after, landed),
            )
        kept = keep.to_pylist()
        row_keep = pa.array([k for k, b in zip(kept, is_block, strict=True) if not b], pa.bool_())
        block_keep = pa.array([k for k, b in zip(kept, is_block, strict=True) if b], pa.bool_())
        return (
            _select_rows(rows, origins, row_keep, after, landed),
            _select_block(joined, block_keep, after, landed),
        )

    def _insert(self, table: str, fresh: Fresh, token: str) -> int:
        """Insert the ``fresh`` rows under ``token`` (see :meth:`_land`)."""
        started = time.perf_counter()
        rows, total = fresh.rows, fresh.total
        if table == REJECTED_TABLE:  # the letter's id was for the check above only
            rows = [{k: v for k, v in row.items() if k != "fact_id"} for row in rows]
        if len(rows):
            if fresh.digest:
                # Other rows than the batch's first try: a token of their own, or ClickHouse
                # could take a part of them (a poison split, numbered by position) for a
                # part of the first try that landed, and drop it.
                token += ":" + fresh.digest
            try:
                refused = insert_isolating(self.store, table, rows, dedup_token=token)
                if refused:
                    self._dead_letter(refused, token)
            except StoreError as exc:
                self.refusals += 1
                self.metrics.refused()
                if not isinstance(exc, StoreUnavailable):
                    self._errors += 1
                    if self._errors >= self.max_errors:
                        raise
                raise Backpressure(self.backoff.next_delay(), exc) from exc
            self.landed.add_all(fresh.event_ids)
            self.inserts += 1
        self.duplicates_dropped += total - len(rows)
        self.rows_written += len(rows)
        self.metrics.landed(
            table, rows, total - len(rows), time.perf_counter() - started, datetime.now(UTC)
        )
        return len(rows)

    def _dead_letter(self, refused: list[Refused], token: str) -> None:
        """Rows the store refused on their own go to ``rejected_events`` (with the batch's
        token, so a replay of the batch records them once), and the batch moves on."""
        log.warning(
            "the store refused %d %s row(s): %s", len(refused), refused[0].table, refused[0].reason
        )
        now = datetime.now(UTC)
        rows = [r.dead_letter(now) for r in refused]
        self.store.insert("rejected_events", rows, dedup_token=f"{token}/refused")
        self.refused_rows += len(refused)
        self.metrics.refused_rows(refused[0].table, len(refused))

    def _report_lag(self) -> None:
        """Records behind the end of each assigned partition (from the fetch responses)."""
        lags = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            position = self._fetched.get(tp)
            if end is not None and position is not None:
                lags[(tp.topic, tp.partition)] = max(0, end - position)
        self.metrics.consumer_lag(lags)

    def _commit(self, offsets: dict[Any, OffsetAndMetadata]) -> bool:
        """Commit ``offsets``; ``False`` when the group rebalanced meanwhile (the partitions'
        next owner starts from what was committed before, and finds the plans)."""
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("commit refused, the group rebalanced: %s", exc)
            return False
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # The broker is away (a restart): as after a crash between insert and commit,
            # the plan committed before the insert makes a replay land the same batch once;
            # a plan not committed means nothing was inserted, and the batch goes again.
            log.warning("commit failed, the broker is unavailable: %s", exc)
            return False
        return True

    def _hold_back(self, exc: Backpressure) -> None:
        """Pause every partition held and retry after ``exc.retry_after``."""
        log.warning("%s; pausing consumption", exc)
        self.metrics.paused.set(1)
        self._retry_at = self.clock() + exc.retry_after
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(*assignment)
