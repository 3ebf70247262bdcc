"""The dev broker is a real Apache Kafka that both Python clients can use, on one node.

Each test talks to the session's broker (``kafka_bootstrap``) over TCP with the real client
libraries: kafka-python (idempotent producer, transactions) and aiokafka (what Faust uses).
The last tests exercise the launcher's own contract: restart on a kept data directory,
idempotent stop, no JVM left behind, a clear error when the broker cannot start.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from devtools.kafka_broker import (
    KAFKA_VERSION,
    MARKER_NAME,
    KafkaBroker,
    KafkaBrokerError,
    ensure_jars,
)

N = 50


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def read_values(
    bootstrap: str, topic: str, expected: int, *, isolation_level: str = "read_uncommitted"
) -> list[bytes]:
    """Read a topic from the start until ``expected`` records arrived or 10s of silence."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
        consumer_timeout_ms=10_000,
    )
    try:
        values: list[bytes] = []
        for record in consumer:
            values.append(record.value)
            if len(values) >= expected:
                break
        return values
    finally:
        consumer.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_broker_serves_metadata(kafka_bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    brokers = cluster["brokers"]
    assert len(brokers) == 1
    assert not brokers[0]["is_fenced"]
    assert cluster["controller_id"] == brokers[0]["broker_id"]


def test_idempotent_producer_round_trip(kafka_bootstrap: str) -> None:
    topic = topic_name("idempotent")
    create_topic(kafka_bootstrap, topic)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    try:
        futures = [producer.send(topic, f"event-{i}".encode()) for i in range(N)]
        producer.flush(timeout=20)
        offsets = [f.get(timeout=10).offset for f in futures]
    finally:
        producer.close()
    assert offsets == list(range(N))  # acks=all with min.insync.replicas=1 on one node
    assert read_values(kafka_bootstrap, topic, N) == [f"event-{i}".encode() for i in range(N)]


def test_auto_created_topic(kafka_bootstrap: str) -> None:
    topic = topic_name("auto")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topic, b"first").get(timeout=20)
    finally:
        producer.close()
    assert read_values(kafka_bootstrap, topic, 1) == [b"first"]


def test_aiokafka_round_trip_with_consumer_group(kafka_bootstrap: str) -> None:
    topic = topic_name("aiokafka")
    create_topic(kafka_bootstrap, topic, partitions=4)

    async def scenario() -> tuple[list[bytes], int]:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for i in range(N):
                await producer.send(topic, f"a-{i}".encode(), key=str(i % 4).encode())
            await producer.flush()
        finally:
            await producer.stop()
        group = f"g-{uuid.uuid4().hex[:8]}"
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            async with asyncio.timeout(30):
                while len(got) < N:
                    batches = await consumer.getmany(timeout_ms=1000)
                    got.extend(r.value for records in batches.values() for r in records)
            await consumer.commit()  # needs the group coordinator (offsets topic, RF 1)
            committed = 0
            for tp in consumer.assignment():
                committed += await consumer.committed(tp) or 0
        finally:
            await consumer.stop()
        return got, committed

    got, committed = asyncio.run(scenario())
    assert sorted(got) == sorted(f"a-{i}".encode() for i in range(N))
    assert committed == N


def test_kafka_python_transactions_commit_and_abort(kafka_bootstrap: str) -> None:
    topic = topic_name("txn")
    create_topic(kafka_bootstrap, topic)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"txn-{uuid.uuid4().hex[:8]}"
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, f"committed-{i}".encode())
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(topic, b"aborted")
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, b"after-abort")
        producer.commit_transaction()
    finally:
        producer.close()
    expected = [b"committed-0", b"committed-1", b"committed-2", b"after-abort"]
    assert read_values(kafka_bootstrap, topic, 4, isolation_level="read_committed") == expected


def test_aiokafka_transaction_commits(kafka_bootstrap: str) -> None:
    """What Faust's ``processing_guarantee="exactly_once"`` relies on."""
    topic = topic_name("aiotxn")
    create_topic(kafka_bootstrap, topic)

    async def scenario() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"aio-{uuid.uuid4().hex[:8]}"
        )
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(3):
                    await producer.send(topic, f"t-{i}".encode())
        finally:
            await producer.stop()

    asyncio.run(scenario())
    assert read_values(kafka_bootstrap, topic, 3, isolation_level="read_committed") == [
        b"t-0",
        b"t-1",
        b"t-2",
    ]


def test_jar_cache_is_complete() -> None:
    jars = ensure_jars()
    assert jars.name == f"kafka-{KAFKA_VERSION}"
    assert (jars / MARKER_NAME).is_file()
    assert (jars / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert ensure_jars() == jars  # cached: no second fetch


def test_restart_keeps_data_and_stop_is_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka-data"
    topic = topic_name("persist")
    with KafkaBroker(data_dir=data_dir) as first:
        pid = first.pid
        producer = KafkaProducer(bootstrap_servers=first.bootstrap_servers, acks="all")
        try:
            producer.send(topic, b"kept").get(timeout=20)
        finally:
            producer.close()
    assert pid is not None
    assert not pid_alive(pid)
    assert not first.is_running()
    first.stop()  # idempotent
    assert data_dir.is_dir()  # a given data dir is kept

    second = KafkaBroker(data_dir=data_dir)  # new ports, same (already formatted) storage
    try:
        bootstrap = second.start()
        assert read_values(bootstrap, topic, 1) == [b"kept"]
    finally:
        second.stop()
        second.stop()
    with pytest.raises(KafkaBrokerError):
        _ = second.bootstrap_servers


def test_temporary_data_dir_is_removed_on_stop() -> None:
    broker = KafkaBroker()
    broker.start()
    data_dir = broker.data_dir
    assert data_dir is not None
    assert (data_dir / "server.properties").is_file()
    broker.stop()
    assert not data_dir.exists()


def test_start_failures_are_clear(tmp_path: Path) -> None:
    empty_jars = tmp_path / "jars"
    empty_jars.mkdir()
    with pytest.raises(KafkaBrokerError, match="no Kafka broker jar"):
        KafkaBroker(jars_dir=empty_jars).start()
    with socket.socket() as squatter:  # a requested port that is taken
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = KafkaBroker(port=port)
        with pytest.raises(KafkaBrokerError, match=rf"port {port} is already in use"):
            broker.start(timeout=60)
    assert not broker.is_running()
    assert broker.data_dir is None  # the temporary data dir is gone again


def test_jvm_exit_during_startup_reports_the_cause(tmp_path: Path) -> None:
    """A broker that cannot run (its storage belongs to another node) fails with the cause."""
    data_dir = tmp_path / "other-node"
    (data_dir / "kraft-logs").mkdir(parents=True)
    (data_dir / "kraft-logs" / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\n", encoding="utf-8"
    )
    broker = KafkaBroker(data_dir=data_dir)
    try:
        with pytest.raises(KafkaBrokerError, match="exited with code") as info:
            broker.start(timeout=60)
    finally:
        broker.stop()
    assert "--- errors ---" in str(info.value)
    assert "node" in str(info.value).split("--- errors ---")[1]
    assert not broker.is_running()
