"""The worker's own commit positions (stream_processors.commits), on Faust's consumer.

No broker: a Faust consumer keeps its acknowledged and committed offsets in plain structures,
and these tests drive them as a rebalance does. Faust on its own commits past a skipped
record (probed before the fix: committed 21, acknowledged 22-23, and it committed 24).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream_processors import commits

TOPIC = "funnel.person-events"
tp = TP(TOPIC, 3)
other = TP(TOPIC, 1)


@dataclass
class Item:  # what a Faust batch holds: an event with its message
    message: ConsumerMessage


def record(offset: int, partition: TP = tp, generation: int = 3) -> Item:
    return Item(
        ConsumerMessage(
            partition.topic, partition.partition, offset, 0.0, 0, [], b"k", b"v", None, 1, 1,
            partition, generation_id=generation,
        )
    )  # fmt: skip


def offsets(items: list[Item]) -> list[tuple[int, int]]:
    return [(i.message.partition, i.message.offset) for i in items]


@pytest.fixture(autouse=True)
def positions() -> Iterator[None]:
    commits._NEXT.clear()
    commits._SEEKS.clear()
    yield
    commits._NEXT.clear()
    commits._SEEKS.clear()


@pytest.fixture
def consumer() -> Iterator[Any]:
    commits.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Faust's services take the current loop
    app = faust.App("commits-test", broker="kafka://127.0.0.1:1", autodiscover=False, loop=loop)
    app.topics._acking_topics.add(TOPIC)  # as subscribing an agent's stream does
    app.consumer_generation_id = 3
    app.flow_control.resume()
    consumer = app.consumer
    yield consumer
    consumer._thread.thread_loop.close()  # made for the consumer thread, never started
    asyncio.set_event_loop(None)
    loop.close()


def test_a_batch_takes_each_partition_in_order_from_its_position() -> None:
    commits._NEXT.update({tp: 21, other: 5})
    batch = [record(20), record(21), record(5, other), record(21), record(22), record(6, other)]
    admission = commits.admit(batch, now=0.0)
    # 20 was finished before; the second 21 is a copy delivered twice
    assert offsets(admission.taken) == [(3, 21), (1, 5), (3, 22), (1, 6)]
    assert (admission.again, admission.behind, admission.ahead) == ({}, 2, 0)
    commits.advance(admission.taken)
    assert (commits.position(tp), commits.position(other)) == (23, 7)


def test_a_skipped_record_stops_its_partition_and_it_is_read_again() -> None:
    commits._NEXT.update({tp: 21, other: 5})
    batch = [record(22), record(5, other), record(23), record(21)]
    admission = commits.admit(batch, now=0.0)
    assert offsets(admission.taken) == [(1, 5)]  # nothing of partition 3 before 21 is read
    assert (admission.again, admission.ahead) == ({tp: 21}, 3)
    # the records still in flight ask for nothing more, until a read-again is overdue
    assert commits.admit([record(24)], now=1.0).again == {}
    assert commits.admit([record(24)], now=6.0).again == {tp: 21}
    taken = commits.admit([record(21), record(22)], now=6.5).taken  # read again, in order
    commits.advance(taken)
    assert commits.position(tp) == 23


def test_a_partition_not_placed_yet_is_not_read() -> None:
    admission = commits.admit([record(0)], now=0.0)
    assert (admission.taken, admission.again, admission.ahead) == ([], {}, 1)


def test_a_batch_counts_only_within_one_generation_with_the_flow_on(consumer: Any) -> None:
    app = consumer.app
    assert commits.counts(app, [record(21), record(22)])
    assert not commits.counts(app, [record(21), record(22, generation=2)])
    app.flow_control.suspend()  # a rebalance began
    assert not commits.counts(app, [record(21)])


def test_faust_commits_the_position_and_nothing_past_it(consumer: Any) -> None:
    consumer._committed_offset[tp] = 21
    commits._NEXT[tp] = 21
    for item in (record(22), record(23)):  # acknowledged, but 21 was skipped
        consumer.ack(item.message)
    assert consumer._new_offset(tp) is None
    commits.advance([record(21), record(22), record(23)])
    assert consumer._new_offset(tp) == 24
    assert consumer._acked[tp] == []  # Faust's own record trimmed behind the position


def test_each_assignment_starts_at_the_groups_commit_or_the_log_start(consumer: Any) -> None:
    async def seek_to_committed() -> dict[TP, int | None]:
        return {tp: 40, other: None, TP("funnel-person-state-changelog", 3): 7}

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        return dict.fromkeys(partitions, 2)  # the log start (older records deleted)

    seeks: list[tuple[TP, int]] = []

    async def seek(partition: TP, offset: int) -> None:
        seeks.append((partition, offset))

    consumer.seek_to_committed = seek_to_committed
    consumer.earliest_offsets = earliest_offsets
    consumer.seek = seek
    consumer.assignment = lambda: {tp, other}
    commits._NEXT[TP(TOPIC, 0)] = 9  # revoked since
    consumer.loop.run_until_complete(consumer.perform_seek())
    revoked = commits.position(TP(TOPIC, 0))
    assert (commits.position(tp), commits.position(other), revoked) == (40, 2, None)
    assert seeks == [(other, 2)]  # aiokafka would have left it where recovery's fetches did
    assert consumer._committed_offset[tp] == 40


def test_installing_twice_wraps_once() -> None:
    commits.install()
    seek = faust.transport.consumer.Consumer.perform_seek
    commits.install()
    assert faust.transport.consumer.Consumer.perform_seek is seek
