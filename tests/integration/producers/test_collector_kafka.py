"""The collector in Kafka mode on a real broker: a 2xx means in the topic, exactly once.

This test owns its broker (it stops and restarts it), unlike the session broker others share.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from starlette.testclient import TestClient

from devtools.kafka_broker import KafkaBroker
from funnel.topics import TopicNames
from producers.collector import CollectorSettings, KafkaDelivery, create_app
from stream_processors.topics import create_topics
from tests.servers import free_port

KEY = "k-shop"


def batch(n: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": str(uuid.uuid4()),
            "type": "impression",
            "anonymous_id": f"dev-{i % 7}",
            "occurred_at": "2026-10-01T10:00:00Z",
        }
        for i in range(n)
    ]


def topic_records(bootstrap: str, topic: str) -> list[tuple[bytes, Any]]:
    """Each record's key and decoded value (an object, or an array of a key's events)."""
    import json

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
        isolation_level="read_committed",
    )
    try:
        return [(record.key, json.loads(record.value)) for record in consumer]
    finally:
        consumer.close()


def topic_contents(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, object]]]:
    """Each item (an event, or a rejection) with its record's key."""
    return [
        (key, one)
        for key, value in topic_records(bootstrap, topic)
        for one in (value if isinstance(value, list) else [value])
    ]


def scenario(broker: KafkaBroker, names: TopicNames) -> tuple[list[str], list[str]]:
    """Up, down, up again. Returns the ids of the events acknowledged at the first attempt,
    and of those refused (503) and acknowledged when the client sent them again."""
    bootstrap = broker.bootstrap_servers
    settings = CollectorSettings(
        write_keys={KEY: "shop"},  # type: ignore[dict-item]
        ack_timeout_s=3.0,
        retry_after_s=2,
    )
    delivery = KafkaDelivery(
        bootstrap,
        events_topic=names.events,
        rejected_topic=names.rejected,
        ack_timeout_s=settings.ack_timeout_s,
    )
    acknowledged: list[str] = []
    retried: list[str] = []
    refused: list[list[dict[str, object]]] = []
    with TestClient(create_app(settings, delivery)) as client:
        for _ in range(8):
            body = batch(25)
            response = client.post("/v1/batch", json=body, headers={"X-Funnel-Key": KEY})
            assert response.status_code == 200
            acknowledged += [str(e["event_id"]) for e in body]
        mixed = [*batch(2), {"type": "click"}]
        response = client.post("/v1/batch", json=mixed, headers={"X-Funnel-Key": KEY})
        assert response.json()["accepted"] == 2
        acknowledged += [str(e["event_id"]) for e in mixed[:2]]

        broker.stop()
        for _ in range(3):
            body = batch(10)
            response = client.post("/v1/batch", json=body, headers={"X-Funnel-Key": KEY})
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "2"
            refused.append(body)

        broker.start()  # same port and data: the client retries what was refused
        for body in refused:
            # Until the producer has reconnected a retry may be refused again (each attempt
            # waits out the ack timeout, so the loop paces itself); it must never be lost.
            statuses = []
            for _ in range(10):
                response = client.post("/v1/batch", json=body, headers={"X-Funnel-Key": KEY})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    break
            assert statuses[-1] == 200, statuses
            assert set(statuses) <= {200, 503}
            retried.extend(str(e["event_id"]) for e in body)
    return acknowledged, retried


def test_acknowledged_events_are_in_the_topic_once_and_a_down_broker_gets_503(
    tmp_path: Path,
) -> None:
    names = TopicNames(f"coll{uuid.uuid4().hex[:6]}.")
    broker = KafkaBroker(port=free_port(), data_dir=tmp_path / "kafka")
    bootstrap = broker.start()
    try:
        create_topics(bootstrap, names, partitions=3)
        acknowledged, retried = scenario(broker, names)

        records = topic_contents(bootstrap, names.events)
        counts = Counter(str(value["event_id"]) for _, value in records)
        # One record per request and person key (DESIGN §4): 7 devices per request of 25.
        arrays = [v for _, v in topic_records(bootstrap, names.events) if isinstance(v, list)]
        assert len(arrays) >= 8 * 7
        assert all(len({e["anonymous_id"] for e in events}) == 1 for events in arrays)
        assert set(counts) == set(acknowledged) | set(retried)
        # A 2xx means in the topic once. A request refused with 503 may still have landed
        # (its acknowledgement came too late, just after the broker restarted): the client's
        # retry can then add a second copy, with the same event id, which the stream drops.
        assert all(counts[e] == 1 for e in acknowledged), counts
        assert all(counts[e] in (1, 2) for e in retried), counts
        assert all(key == f"shop:{value['anonymous_id']}".encode() for key, value in records)
        rejected = topic_contents(bootstrap, names.rejected)
        assert len(rejected) == 1
        assert "occurred_at" in str(rejected[0][1]["reason"])
    finally:
        broker.stop()


def test_serve_with_two_processes_stores_every_2xx_event_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Issue 16: ``funnel serve --kafka … --workers 2`` serves from two processes on one port;
    every event of a 2xx answer is in the topic once, a request's events of one device in one
    record. Embedded mode refuses the option (one owner per store)."""
    import json
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    names = TopicNames(f"work{uuid.uuid4().hex[:6]}.")
    port = free_port()
    env = {**os.environ, "FUNNEL_WRITE_KEYS": f"{KEY}:shop"}
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", names.prefix, "--partitions", "2"]
    args += ["--workers", "2"]
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "funnel.cli", "serve", "--port", str(port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    sent: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with http.open(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the collector did not start"
            time.sleep(0.2)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        commands = [Path(f"/proc/{c}/cmdline").read_bytes() for c in children]
        assert sum(b"spawn_main" in c for c in commands) == 2, "two collector processes"
        for _ in range(20):  # a new connection each: the kernel spreads them over both
            body = batch(10)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/batch",
                data=json.dumps(body).encode(),
                headers={"X-Funnel-Key": KEY, "Content-Type": "application/json"},
            )
            with http.open(request, timeout=30) as answer:
                assert answer.status == 200
            sent += [str(e["event_id"]) for e in body]
    finally:
        server.terminate()
        server.wait(30)
    counts = Counter(str(v["event_id"]) for _, v in topic_contents(kafka_bootstrap, names.events))
    assert counts == Counter(sent)
    records = topic_records(kafka_bootstrap, names.events)
    assert len(records) == 20 * 7  # 7 devices per request of 10
    embedded = subprocess.run(
        [sys.executable, "-m", "funnel.cli", "serve", "--workers", "2"],
        env={**env, "FUNNEL_STORE": f"chdb://{tmp_path / 'store'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert embedded.returncode == 2
    assert "--workers needs --kafka" in embedded.stderr
