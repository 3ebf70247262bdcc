"""A poison event (one the runtime raises on) in the Kafka pipeline: dead-lettered with its
reason, the state it half changed dropped, every other event landed exactly once, and the
worker goes on (issue 19). The runtime's bug is injected by :mod:`tests.poison`."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from funnel.intake import POISON
from funnel.topics import TopicNames
from producers.kafka_producer import EventProducer
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.sink import Sink
from stream_processors.topics import create_topics
from tests import poison
from tests.integration.stream_processors.test_kafka_pipeline import (
    PARTITIONS,
    assert_landed_exactly,
    dead_letters,
    drained,
    sink_running,
    wait_until,
    worker_factory,  # noqa: F401  (the fixture)
    worker_metric,
)

SITE = "poison-it"


@pytest.mark.integration
def test_a_poison_event_is_dead_lettered_and_the_worker_goes_on(
    kafka_bootstrap: str,
    store: ChdbStore,
    worker_factory: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    names = TopicNames(f"poison{run}.")
    app_id, group = f"funnel-poison-{run}", f"sink-poison-{run}"
    create_topics(kafka_bootstrap, names, PARTITIONS)
    sim = simulate(400, seed=7, site_id=SITE, multi_device=0.5)
    copies = poison.poisoned(sim.events, 6, seed=7)
    bad = list(copies.values())
    with EventProducer(kafka_bootstrap, names.events) as producer:
        for event in sim.events:
            producer.send(event)
            if event.event_id in copies:  # right after the event it copies: the same batch
                producer.send(copies[event.event_id])
        producer.send_raw(f"{SITE}:bad".encode(), b'{"type": "click"}')  # and a malformed one
        producer.flush()

    worker = worker_factory(
        app_id, names.prefix, "w1", "--status-every", "3600", module="tests.poison"
    )
    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    with sink_running(sink):
        wait_until(
            lambda: drained(kafka_bootstrap, app_id, group, names, [worker]),
            300,
            "the worker and the sink to take every record",
        )

    # Nothing of the poison events: not their rows, nor stages or credits from the state
    # they changed before raising; every other event exactly once.
    assert_landed_exactly(store, sim, SITE)
    letters = [
        letter
        for letter in dead_letters(kafka_bootstrap, names)
        if json.loads(str(letter["reason"]))[0]["code"] == POISON
    ]
    by_id = {str(letter["rejection_id"]): letter for letter in letters}
    assert {json.loads(str(v["payload"]))["event_id"] for v in by_id.values()} == {
        b.event_id for b in bad
    }
    for letter in by_id.values():
        assert json.loads(str(letter["reason"]))[0]["reason"] == poison.REASON
        assert letter["site_id"] == SITE
    assert worker.poll() is None
    # The sink lands the dead letters too, each once (a batch run again re-sent some).
    stored = store.query(f"SELECT site_id, reason, payload FROM {store.database}.rejected_events")
    codes = sorted(json.loads(row["reason"])[0]["code"] for row in stored)
    assert codes == sorted([POISON] * len(bad) + ["missing"])
    assert sorted(
        json.loads(row["payload"]).get("event_id")
        for row in stored
        if json.loads(row["reason"])[0]["code"] == POISON
    ) == sorted(b.event_id for b in bad)
    assert {row["site_id"] for row in stored} == {SITE}
    assert worker_metric(worker, "funnel_worker_events_total", 'outcome="poison"') >= len(bad)
