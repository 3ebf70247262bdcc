"""Erasing a person in Kafka mode (issue 18), on the real broker, a real ``funnel worker`` and
the sink into chDB: the workers' state of the person goes (tombstones in their changelogs and
on ``facts.persons``), the store's rows go, and everyone else's rows stay as they were."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer

from funnel.events import Event, EventType
from funnel.identity import customer_key, device_key
from funnel.topics import TopicNames
from producers.kafka_producer import EventProducer
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.forget import PERSON_TABLES, bound_in
from storage.sink import Sink
from stream_processors.forget import erase_person
from stream_processors.topics import create_topics
from tests.integration.storage.test_forget import subject_events
from tests.integration.stream_processors.test_kafka_pipeline import (
    PARTITIONS,
    drained,
    sink_running,
    wait_until,
    worker_factory,  # noqa: F401  (the fixture)
)

SITE = "fg"


def last_values(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """Each key's latest value in ``topic`` (``None``: a tombstone)."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=4000
    )
    try:
        return {record.key: record.value for record in consumer}
    finally:
        consumer.close()


def others(store: ChdbStore, ids: set[str]) -> dict[str, list[str]]:
    """Every row of the person tables that names none of ``ids``, sorted, per table."""
    rows = {}
    for table in PERSON_TABLES:
        found = store.query(f"SELECT * FROM {store.database}.{table}")
        rows[table] = sorted(
            json.dumps(r, default=str, sort_keys=True)
            for r in found
            if r.get("person_id") not in ids
            and r.get("anonymous_id") not in ids
            and r.get("customer_id") not in ids
        )
    return rows


def test_forget_erases_the_workers_state_with_tombstones_and_the_store_rows(
    kafka_bootstrap: str,
    store: ChdbStore,
    worker_factory: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    names = TopicNames(f"fg{run}.")
    app_id, sink_group = f"funnel-fg-{run}", f"sink-{run}"
    create_topics(kafka_bootstrap, names, PARTITIONS)
    sim = simulate(300, seed=18, site_id=SITE, multi_device=0.5)
    customer, named = subject_events(sim.events)
    devices = sorted(
        {e.anonymous_id for e in sim.events if e.customer_id == customer and e.anonymous_id}
    )
    assert len(devices) >= 2
    with EventProducer(kafka_bootstrap, names.events) as producer:
        for event in sim.events:
            producer.send(event)
        producer.flush()

    worker = worker_factory(app_id, names.prefix, "w1", "--status-every", "3600")
    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=sink_group, topics=names)
    with sink_running(sink):
        wait_until(
            lambda: drained(kafka_bootstrap, app_id, sink_group, names, [worker]),
            300,
            "the worker and the sink to take every record",
        )
        ids = {customer, *devices}
        before = others(store, ids)
        assert any(
            store.query(f"SELECT 1 FROM {store.database}.events WHERE customer_id = '{customer}'")
        )

        subject, erasure, done = erase_person(
            store,
            kafka_bootstrap,
            names,
            SITE,
            anonymous=devices[0],  # a device stands for its customer, with all their devices
            requested_by="dpo",
            at=datetime.now(UTC),
            sink_group=sink_group,
            timeout_s=120,
        )
        assert subject.customer_ids == {customer}
        assert set(devices) <= subject.anonymous_ids
        assert erasure.rows["events"] == len(named)
        assert (done.states, done.links) == (
            1 + len(subject.anonymous_ids),
            len(subject.anonymous_ids),
        )
        assert done.tombstones == done.states + done.links

        # The store: nothing names them; every other row is as it was.
        assert others(store, set()) == before
        where, params = bound_in("person_id", subject.person_ids, "p")
        for table in PERSON_TABLES:
            [row] = store.query(
                f"SELECT count() AS n FROM {store.database}.{table} WHERE {where}", params
            )
            assert row["n"] == 0, table

        # The stream: the latest record of each of their keys is a tombstone, in both tables'
        # changelogs and on the compacted persons topic.
        state = last_values(kafka_bootstrap, f"{app_id}-person-state-changelog")
        links = last_values(kafka_bootstrap, f"{app_id}-device-links-changelog")
        persons = last_values(kafka_bootstrap, names.facts("persons"))
        keys = [customer_key(SITE, customer), *(device_key(SITE, d) for d in subject.anonymous_ids)]
        assert all(k.encode() in state for k in keys)  # they had state, now a tombstone
        assert all(state[k.encode()] is None for k in keys)
        linked = [f"{SITE}:{d}".encode() for d in subject.anonymous_ids]
        assert any(k in links for k in linked)
        assert all(links.get(k, None) is None for k in linked)
        assert all(persons[f"{SITE}:{p}".encode()] is None for p in subject.person_ids)

        # The running worker forgot them too: the device seen again is a new visitor (no link
        # to the customer), the customer seen again a new customer (no payments).
        later = max(e.occurred_at for e in sim.events) + timedelta(days=1)
        again = [
            Event(
                event_id=str(uuid.uuid4()),
                type=EventType.IMPRESSION,
                site_id=SITE,
                anonymous_id=devices[0],
                occurred_at=later,
            ),
            Event(
                event_id=str(uuid.uuid4()),
                type=EventType.IMPRESSION,
                site_id=SITE,
                customer_id=customer,
                occurred_at=later + timedelta(minutes=1),
            ),
        ]
        with EventProducer(kafka_bootstrap, names.events) as producer:
            for event in again:
                producer.send(event)
            producer.flush()
        wait_until(
            lambda: drained(kafka_bootstrap, app_id, sink_group, names, [worker]),
            120,
            "the new events to land",
        )
    where, params = bound_in("person_id", [customer, devices[0]], "p")
    rows = store.query(
        "SELECT person_id, argMax(payments, updated_at) AS payments, "
        "argMax(merged_into, updated_at) AS merged_into "
        f"FROM {store.database}.persons WHERE {where} GROUP BY person_id",
        params,
    )
    assert {r["person_id"] for r in rows} == {customer, devices[0]}
    for row in rows:  # new persons: no payments, the device not merged into the customer
        assert row["payments"] == 0, row
        assert row["merged_into"] == "", row
    [events] = store.query(
        f"SELECT count() AS n FROM {store.database}.events WHERE {where}", params
    )
    assert events["n"] == 2
    [record] = store.query(f"SELECT * FROM {store.database}.erasures")
    assert record["tables"]["kafka:person-state"] == done.states
    assert not any(i in json.dumps(record, default=str) for i in ids)


def test_funnel_forget_in_kafka_mode_names_what_is_missing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The command's Kafka mode, without its topics: a one-line error, nothing erased."""
    import sys

    funnel = str(Path(sys.executable).with_name("funnel"))
    store = f"chdb://{tmp_path / 'store'}"
    migrate = subprocess.run(
        [funnel, "migrate", "--store", store], capture_output=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr
    done = subprocess.run(
        [
            *(funnel, "forget", "--customer", "c-1", "--site", "s", "--store", store),
            *("--kafka", kafka_bootstrap, "--topic-prefix", f"none{uuid.uuid4().hex[:6]}."),
            *("--wait", "5"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "does not exist: check --kafka and --topic-prefix" in done.stderr
