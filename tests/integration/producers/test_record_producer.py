"""The collector's producer (librdkafka) on the real broker: every record acknowledged once,
placed where Kafka's default partitioner (and so the workers, :func:`partition_of`) puts it."""

from __future__ import annotations

import threading
import uuid

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from producers.record_producer import RecordProducer
from stream_processors.topics import partition_of


def test_records_land_once_in_the_partition_of_their_key(kafka_bootstrap: str) -> None:
    topic = f"records-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    producer = RecordProducer(kafka_bootstrap, ack_timeout_s=10)
    assert producer.partitions_for(topic) == {0, 1, 2, 3}
    records = [(f"site:person-{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(200)]
    outcomes: list[BaseException | None] = []
    settled = threading.Event()

    def done(error: BaseException | None) -> None:
        outcomes.append(error)
        settled.set()

    assert producer.send_all(records, done, topic=topic) == 200
    assert settled.wait(30)
    producer.close()
    assert outcomes == [None]  # called once, when all 200 were acknowledged

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
    )
    landed = [(r.key, r.value, r.partition) for r in consumer]
    consumer.close()
    assert sorted((k, v) for k, v, _ in landed) == sorted(records)
    assert all(p == partition_of(k, 4) for k, _, p in landed)
    assert len({p for _, _, p in landed}) == 4
