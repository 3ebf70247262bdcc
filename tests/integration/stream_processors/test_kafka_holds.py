"""A customer's events wait in the Kafka person stage for the history of a device just linked
to them (it comes from the device's partition); when it never comes they go on after the
hold limit, in order, each landed once. The release by the device's answer is checked by
``test_the_kafka_worker_and_the_embedded_runner_land_the_same_facts``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from funnel.events import Event
from funnel.identity import customer_key, device_key
from funnel.topics import TopicNames
from storage.backends import ChdbStore
from storage.sink import Sink
from stream_processors.topics import create_topics, partition_of
from tests.factories import make_event
from tests.integration.stream_processors.test_kafka_pipeline import (
    PARTITIONS,
    drained,
    sink_running,
    wait_until,
    worker_factory,  # noqa: F401  (the fixture)
    worker_metric,
)

SITE = "hold-it"


def as_json(event: Event) -> dict[str, Any]:
    return json.loads(event.model_dump_json(exclude_none=True))  # type: ignore[no-any-return]


def send_person_events(
    bootstrap: str, names: TopicNames, messages: list[tuple[str, dict[str, Any]]]
) -> None:
    """The route stage's messages, each to its customer's ``person-events`` partition."""
    with contextlib.closing(KafkaProducer(bootstrap_servers=bootstrap)) as producer:
        for customer, message in messages:
            key = customer_key(SITE, customer).encode()
            partition = partition_of(key, PARTITIONS)
            value = json.dumps(message).encode()
            producer.send(names.person_events, value, key=key, partition=partition).get(30)


def waited_out(worker: subprocess.Popen[bytes]) -> float:
    """The worker's count of events that went on without the history (0 until it serves)."""
    try:
        return worker_metric(worker, "funnel_worker_held_events_total", 'how="waited_out"')
    except OSError:  # its web server is not up yet
        return 0.0


@pytest.mark.integration
def test_events_held_for_a_device_history_that_never_comes_go_on_after_the_limit(
    kafka_bootstrap: str,
    store: ChdbStore,
    worker_factory: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    names = TopicNames(f"hold{run}.")
    app_id, group = f"funnel-hold-{run}", f"sink-hold-{run}"
    create_topics(kafka_bootstrap, names, PARTITIONS)
    worker = worker_factory(app_id, names.prefix, "w1", "--status-every", "1", "--hold-limit", "2")
    # The route stage's messages for a customer whose first event linked a device, as if the
    # hand-over to the device's partition were lost: the lead waits for the device's history,
    # the order behind it; another customer's event does not wait.
    lead = make_event("lead", 0, person="ghost", site=SITE, customer_id="c1")
    order = make_event("order", 60_000, person="ghost", site=SITE, customer_id="c1")
    other = make_event("lead", 0, person="x", site=SITE, customer_id="c2")
    messages = [
        ("c1", lead, {"after": device_key(SITE, "ghost")}),
        ("c1", order, {}),
        ("c2", other, {}),
    ]
    send_person_events(
        kafka_bootstrap,
        names,
        [
            (customer, {"kind": "event", "person_id": customer, "event": as_json(e), **extra})
            for customer, e, extra in messages
        ],
    )

    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    with sink_running(sink):
        wait_until(lambda: waited_out(worker) >= 2, 120, "the held events to go on")
        wait_until(
            lambda: drained(kafka_bootstrap, app_id, group, names, [worker]),
            120,
            "the worker and the sink to take every record",
        )
    assert worker_metric(worker, "funnel_worker_held_events_total", 'how="held"') == 2
    assert worker_metric(worker, "funnel_worker_held_events_total", 'how="waited_out"') == 2
    rows = store.query(
        f"SELECT event_id, person_id, count() AS n FROM {store.database}.events "
        "WHERE site_id = {s:String} GROUP BY event_id, person_id",
        {"s": SITE},
    )
    assert sorted((r["event_id"], r["person_id"], r["n"]) for r in rows) == sorted(
        [(lead.event_id, "c1", 1), (order.event_id, "c1", 1), (other.event_id, "c2", 1)]
    )
    assert worker.poll() is None


@pytest.mark.integration
def test_a_held_event_delivered_twice_is_released_by_one_answer(
    kafka_bootstrap: str,
    store: ChdbStore,
    worker_factory: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A replay (a worker killed after it held an event, before its offsets were committed)
    delivers the held event again: it waits for the same device, not for a second answer."""
    run = uuid.uuid4().hex[:8]
    names = TopicNames(f"hold2{run}.")
    app_id, group = f"funnel-hold2-{run}", f"sink-hold2-{run}"
    create_topics(kafka_bootstrap, names, PARTITIONS)
    worker = worker_factory(app_id, names.prefix, "w1", "--status-every", "1")
    lead = make_event("lead", 0, person="phone", site=SITE, customer_id="c1")
    device = device_key(SITE, "phone")
    linking = {"kind": "event", "person_id": "c1", "event": as_json(lead), "after": device}
    answer = {"kind": "absorb", "from": device, "person_id": "c1", "state": None}
    send_person_events(kafka_bootstrap, names, [("c1", m) for m in (linking, linking, answer)])

    sink = Sink(store, bootstrap_servers=kafka_bootstrap, group_id=group, topics=names)
    sql = f"SELECT count() AS n FROM {store.database}.events WHERE event_id = {{e:String}}"
    with sink_running(sink):
        # Well within the hold limit (300 s): released by the answer, not waited out.
        wait_until(
            lambda: store.query(sql, {"e": lead.event_id})[0]["n"] >= 1, 60, "the lead to land"
        )
    assert store.query(sql, {"e": lead.event_id})[0]["n"] == 1
    assert waited_out(worker) == 0
    assert worker.poll() is None
