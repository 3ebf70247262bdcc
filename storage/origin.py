"""Where a fact came from: the identity by which the sink drops what a worker's replay re-sends.

The Kafka worker numbers each fact it sends by its **origin**: the ``person-events``
partition of the record that caused it, and ``seq = offset << 24 | k`` (``k``: the fact's
place among that record's facts). A replay re-sends a record's facts with the same numbers
(the core is deterministic, DESIGN §9), and the facts of one origin partition reach each facts
topic-partition in increasing ``seq``: one worker at a time owns an origin partition, and
its producer keeps a partition's records in order (aiokafka sends one batch per partition at
a time, retries included).

So the sink needs no set of landed row ids: per facts topic-partition it keeps, per origin
partition, the highest ``seq`` landed (:class:`Watermarks`, committed with its offsets as
commit metadata, so a restarted sink or the partition's next owner reads them back with the
offset) and drops any fact at or below it. A block record (Arrow) carries the origin as two
columns (:data:`PARTITION`, :data:`SEQ`; dropped before the insert), a JSON record as the
:data:`HEADER` record header. Facts without an origin (person rows, which the ``persons``
table's ReplacingMergeTree makes idempotent, and records of other producers) are always kept:
the insert token covers them against the sink's own replays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no annotations
import pyarrow.compute as pc  # type: ignore[import-untyped]

__all__ = [
    "HEADER",
    "PARTITION",
    "SEQ",
    "Watermarks",
    "fresh_by_origin",
    "header",
    "origin_of",
    "seq_of",
]

HEADER = "funnel-origin"
"""The record header of a JSON fact: ``b"<partition>:<seq>"``."""
PARTITION = "origin_partition"
SEQ = "origin_seq"
"""The origin columns of a block record (``-1``: none)."""
K_BITS = 24
"""Facts per origin record at most: 2**24 (a record carries at most a few hundred messages)."""


def seq_of(offset: int, k: int) -> int:
    """The ``seq`` of the ``k``-th fact caused by the record at ``offset``."""
    if not 0 <= k < 1 << K_BITS:
        raise ValueError(f"fact {k} of one record: beyond {1 << K_BITS}")
    return offset << K_BITS | k


def header(partition: int, seq: int) -> tuple[str, bytes]:
    return HEADER, b"%d:%d" % (partition, seq)


def origin_of(headers: Iterable[tuple[str, bytes]] | None) -> tuple[int, int]:
    """A record's origin from its headers; ``(-1, -1)`` if it has none."""
    for name, value in headers or ():
        if name == HEADER:
            partition, _, seq = value.partition(b":")
            return int(partition), int(seq)
    return -1, -1


class Watermarks(dict[int, int]):
    """Origin partition → the highest ``seq`` landed (of one facts topic-partition).

    Encoded in the commit metadata: about 20 bytes per origin partition, so the broker's
    ``offset.metadata.max.bytes`` (4096 by default) holds the marks of about 180
    ``person-events`` partitions; raise it for more."""

    def encode(self) -> str:
        return ",".join(f"{p}={s}" for p, s in sorted(self.items()))

    @classmethod
    def decode(cls, text: str) -> Watermarks:
        marks = cls()
        for item in filter(None, text.split(",")):
            partition, _, seq = item.partition("=")
            marks[int(partition)] = int(seq)
        return marks


def fresh_by_origin(
    partitions: pa.Array | Sequence[int], seqs: pa.Array | Sequence[int], marks: Mapping[int, int]
) -> tuple[pa.Array | None, Watermarks]:
    """Which rows to keep, in order: those without an origin, and those whose ``seq`` is above
    their origin partition's watermark and above every earlier row of that partition here (a
    replay's copies within the same rows); ``None`` when all are. And the watermarks after.

    Vectorised (Arrow compute): no per-row Python work for a block."""
    parts = pa.array(partitions, pa.int32()) if not isinstance(partitions, pa.Array) else partitions
    seq = pa.array(seqs, pa.int64()) if not isinstance(seqs, pa.Array) else seqs
    after = Watermarks(marks)
    keep: pa.Array | None = None
    for partition in pc.unique(parts).to_pylist():
        if partition is None or partition < 0:
            continue
        chosen = pc.equal(parts, partition)
        mine = seq.filter(chosen)
        mark = marks.get(partition, -1)
        earlier = pa.concat_arrays([pa.array([mark], pa.int64()), mine.slice(0, len(mine) - 1)])
        fresh = pc.greater(mine, pc.cumulative_max(earlier))
        after[partition] = max(mark, pc.max(mine).as_py())
        if pc.all(fresh).as_py():
            continue
        base = keep if keep is not None else pc.is_valid(parts)
        keep = pc.replace_with_mask(base, chosen, fresh)
    return keep, after
