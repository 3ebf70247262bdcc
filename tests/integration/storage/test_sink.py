"""The sink on the real broker and the embedded engine: facts re-sent land once."""

from __future__ import annotations

import json
import uuid

import msgspec
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from funnel.dedup import BoundedIds
from funnel.facts import StageReached
from funnel.processor import CoreConfig
from funnel.runtime import Batch
from funnel.serialization import dumps_row
from funnel.topics import TopicNames
from producers.simulator import simulate
from storage import origin
from storage.backends import ChdbStore
from storage.fact_columns import fact_blocks
from storage.sink import Sink
from stream_processors.state import SavedState
from stream_processors.topics import create_topics
from tests.integration.stream_processors.test_kafka_pipeline import (
    caught_up,
    sink_running,
    wait_until,
)


def lead_change(n: int) -> dict[str, object]:
    return {
        "fact_id": f"0:{n}:0",
        "site_id": "s",
        "person_id": f"p{n}",
        "customer_id": f"c{n}",
        "temperature": "warm",
        "previous": "cold",
        "queue": "sales",
        "changed_at": "2026-10-01T10:00:00Z",
        "manager_id": "",
    }


def run_until_caught_up(sink: Sink, bootstrap: str, group: str, names: TopicNames) -> None:
    with sink_running(sink):
        wait_until(lambda: caught_up(bootstrap, group, names.all_facts), 60, "the sink")


def test_facts_resent_by_the_stream_land_once_across_sink_restarts(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    """A replay re-sends facts with the origins of their first copies (keyed by person, as
    the worker sends them); the sink drops them by the watermarks it commits with its
    offsets, also after a restart, without reading any row id back from the tables."""
    names = TopicNames(f"sink{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    topic = names.facts("lead_changes")

    def send(numbers: range) -> None:
        for n in numbers:
            row = lead_change(n)
            where = origin.header(n % 3, origin.seq_of(n, 0))  # three origin partitions
            key = str(row["person_id"]).encode()
            producer.send(topic, json.dumps(row).encode(), key=key, headers=[where])
        producer.flush()

    send(range(100))
    send(range(50, 100))  # a worker's replay: the same facts, the same origins
    first = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    run_until_caught_up(first, kafka_bootstrap, group, names)
    assert first.duplicates_dropped == 50

    send(range(90, 120))  # after a sink restart: the watermarks come back with the offsets
    second = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    assert len(second.landed) == 0, "nothing is read back from the tables"
    run_until_caught_up(second, kafka_bootstrap, group, names)
    producer.close()
    assert second.duplicates_dropped == 10
    [row] = store.query(
        f"SELECT count() AS n, uniqExact(fact_id) AS u FROM {store.database}.lead_changes"
    )
    assert row == {"n": 120, "u": 120}
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    committed = [consumer.committed(TopicPartition(topic, p), metadata=True) for p in (0, 1)]
    consumer.close()
    # The identity a restart reads back: a highest origin per origin partition, no more.
    assert all(c is not None and c.metadata.startswith("marks:") for c in committed)
    marks = [m for c in committed if c for m in c.metadata[len("marks:") :].split(",")]
    assert {m.partition("=")[0] for m in marks} == {"0", "1", "2"}
    assert len(marks) <= 6


def test_landed_ids_forget_the_oldest_beyond_their_bound() -> None:
    landed = BoundedIds(max_ids=3)
    landed.add_all(["a", "b"])
    landed.add_all(["c", "d"])
    assert len(landed) == 3
    assert "a" not in landed
    assert all(i in landed for i in "bcd")


def test_the_persons_topic_is_compacted_and_the_others_are_not(kafka_bootstrap: str) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    names = TopicNames(f"topics{uuid.uuid4().hex[:8]}.")
    created = create_topics(kafka_bootstrap, names, 3)
    assert names.leads in created
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        topics = (names.persons, names.leads, names.events)
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )["topic"]
        # Only settings that differ from the broker's defaults (delete) are reported.
        policies = {t: configs[t].get("cleanup.policy", {}).get("value") for t in topics}
        partitions = admin.describe_topics([names.leads])[0]["partitions"]
    finally:
        admin.close()
    assert policies == {names.persons: "compact", names.leads: None, names.events: None}
    assert len(partitions) == 3


def test_a_fact_the_store_refuses_is_dead_lettered_and_the_sink_moves_on(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    """Issue 11: one bad fact never crash-loops the sink; the rest of its batch lands."""
    store.execute(
        f"ALTER TABLE {store.database}.lead_changes ADD CONSTRAINT no_poison "
        "CHECK person_id != 'p13'"
    )
    names = TopicNames(f"poison{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(40):
        producer.send(names.facts("lead_changes"), json.dumps(lead_change(n)).encode())
    producer.flush()
    producer.close()
    sink = Sink(
        store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names, max_errors=1
    )
    run_until_caught_up(sink, kafka_bootstrap, group, names)
    assert sink.refused_rows == 1
    landed = store.query(f"SELECT person_id FROM {store.database}.lead_changes")
    assert sorted(r["person_id"] for r in landed) == sorted(f"p{n}" for n in range(40) if n != 13)
    [dead] = store.query(f"SELECT site_id, reason, payload FROM {store.database}.rejected_events")
    assert dead["site_id"] == "s"
    assert "no_poison" in dead["reason"]
    assert '"person_id":"p13"' in dead["payload"].replace(" ", "")
    metrics = sink.metrics.registry.get_sample_value(
        "funnel_sink_refused_rows_total", {"table": "lead_changes"}
    )
    assert metrics == 1


def test_a_batch_cut_short_in_the_middle_of_its_months_lands_the_rest_on_replay(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    """A sink killed while inserting a batch that spans two months: ClickHouse wrote one
    month's part and not the other's. The replay filters out the landed month's facts (by
    fact id) and must not reuse the batch's token for the rest, or ClickHouse takes the
    remaining month's block for the landed one (block ids are per partition, numbered within
    the insert) and drops it."""
    names = TopicNames(f"cut{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 1)
    topic = names.facts("lead_changes")
    rows = [
        {**lead_change(n), "changed_at": f"2026-{9 + n % 2:02d}-01T10:00:00Z"} for n in range(40)
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for row in rows:
        producer.send(topic, json.dumps(row).encode(), partition=0)
    producer.flush()
    producer.close()
    # The first sink planned 0..39, and ClickHouse had written September when it was killed.
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "plan:39", -1)})
    consumer.close()
    september = [row for row in rows if row["changed_at"].startswith("2026-09")]
    store.insert("lead_changes", september, dedup_token=f"{topic}:0:0:39")

    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    run_until_caught_up(sink, kafka_bootstrap, group, names)
    landed = store.query(f"SELECT person_id FROM {store.database}.lead_changes")
    assert sorted(r["person_id"] for r in landed) == sorted(f"p{n}" for n in range(40))


def test_a_poison_batch_replayed_without_its_landed_rows_lands_the_rest(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    """A sink killed while splitting a refused batch (:mod:`storage.poison`): the part
    ``<token>/0-14`` had landed. The replay has the same rows (the watermarks committed with
    the plan make it so), splits them the same way, and ClickHouse drops what landed."""
    store.execute(
        f"ALTER TABLE {store.database}.lead_changes ADD CONSTRAINT no_poison "
        "CHECK person_id != 'p25'"
    )
    names = TopicNames(f"split{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 1)
    topic = names.facts("lead_changes")
    rows = [lead_change(n) for n in range(30)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for row in rows:
        producer.send(topic, json.dumps(row).encode(), partition=0)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "plan:29", -1)})
    consumer.close()
    store.insert("lead_changes", rows[:15], dedup_token=f"{topic}:0:0:29/0-14")

    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    run_until_caught_up(sink, kafka_bootstrap, group, names)
    landed = store.query(f"SELECT person_id FROM {store.database}.lead_changes")
    assert sorted(r["person_id"] for r in landed) == sorted(f"p{n}" for n in range(30) if n != 25)


def test_block_records_land_once_beside_json_records_and_poison_is_dead_lettered(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    """Issue 15: the worker sends a batch's stage rows as Arrow blocks with their fact ids. A
    replay cut at other boundaries re-sends some of them; a record of an older worker (one
    fact as JSON) sits among them; a row the store refuses is dead-lettered, not retried."""
    store.execute(
        f"ALTER TABLE {store.database}.stage_reached ADD CONSTRAINT no_poison "
        "CHECK person_id != 'poison'"
    )
    batch = Batch(CoreConfig.default(), SavedState())
    batch.submit_all(simulate(60, seed=3, site_id="blk").events)
    stages = [f for f in batch.close().facts if isinstance(f, StageReached)]
    stages[-5] = msgspec.structs.replace(stages[-5], person_id="poison")  # sent once
    ids = [f"0:{n}:0" for n in range(len(stages))]
    origins = [(0, origin.seq_of(n, 0)) for n in range(len(stages))]
    names = TopicNames(f"blk{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 2)
    topic = names.facts("stage_reached")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)

    def send_blocks(start: int, stop: int) -> None:
        block = fact_blocks(stages[start:stop], ids[start:stop], origins[start:stop])
        producer.send(topic, block["stage_reached"].to_ipc(), key=b"block:0")

    third = len(stages) // 3
    send_blocks(0, 2 * third)
    send_blocks(third, len(stages))  # the replay: its first third landed already
    # The last fact again, as a JSON record (as a worker of a JSON format would send it).
    old = {**stages[-1].row(), "fact_id": ids[-1]}
    where = origin.header(*origins[-1])
    producer.send(topic, dumps_row(old).encode(), key=b"block:0", headers=[where])
    producer.flush()
    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    run_until_caught_up(sink, kafka_bootstrap, group, names)
    assert sink.refused_rows == 1
    assert sink.duplicates_dropped == third + 1

    send_blocks(0, third)  # after a restart: the watermarks come back with the offsets
    producer.flush()
    producer.close()
    again = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    run_until_caught_up(again, kafka_bootstrap, group, names)
    assert again.duplicates_dropped == third
    landed = store.query(
        f"SELECT fact_id, person_id, funnel, step, reached_at FROM {store.database}.stage_reached"
    )
    expected = [
        {"fact_id": i, "person_id": f.person_id, "funnel": f.funnel, "step": f.step}
        for i, f in zip(ids, stages, strict=True)
        if f.person_id != "poison"
    ]
    assert sorted((r["fact_id"], r["person_id"], r["funnel"], r["step"]) for r in landed) == sorted(
        tuple(e.values()) for e in expected
    )
    [dead] = store.query(f"SELECT reason FROM {store.database}.rejected_events")
    assert "no_poison" in dead["reason"]
