"""The accounting test (issue 11): fuzzed traffic, then the store is audited.

A mix of valid, hostile and edge-case requests (:mod:`tests.accounting`) goes to a real
collector; every event acknowledged with a 2xx must be in ``events`` exactly once, nothing
else may be, and no request may get a 5xx. Embedded (chDB behind the collector) at
``FUNNEL_ACCOUNTING_REQUESTS`` requests, and through Kafka, the worker and the sink at a fifth
of that. The nightly size: ``FUNNEL_ACCOUNTING_REQUESTS=10000 pytest
tests/integration/producers/test_accounting.py``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from funnel.processor import CoreConfig
from funnel.topics import TopicNames
from producers.collector import CollectorSettings, EmbeddedDelivery, KafkaDelivery, create_app
from producers.collector.delivery import Delivery
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline
from stream_processors.topics import create_topics
from tests.accounting import (
    SITES,
    Ledger,
    Request,
    assert_accounted,
    request_count,
    requests,
)
from tests.integration.stream_processors import test_kafka_pipeline
from tests.integration.stream_processors.test_kafka_pipeline import (
    PARTITIONS,
    land_with_one_worker,
)

worker_factory = test_kafka_pipeline.worker_factory  # the fixture: `funnel worker` processes

AVERAGE_REQUESTS = 6.5  # per example: requests() draws 1 to 12


def collector_settings() -> CollectorSettings:
    # One client that floods and guesses keys on purpose: no rate limits here (their own
    # tests are in test_read_keys.py).
    return CollectorSettings(write_keys=SITES, max_batch=200, rate_limits=None)  # type: ignore[arg-type]


def send(client: TestClient, request: Request, ledger: Ledger) -> None:
    headers = {**request.headers}
    if request.method == "GET":
        response = client.get(request.path, params=request.params)
    else:
        headers["X-Funnel-Key"] = request.key
        response = client.post(request.path, content=request.body, headers=headers)
    answer: Any = None
    if response.headers.get("content-type", "").startswith("application/json"):
        answer = response.json()
    ledger.record(request, response.status_code, answer)


def fuzz(client: TestClient, ledger: Ledger, total: int) -> None:
    """Send about ``total`` requests drawn by hypothesis, recording every answer."""

    @settings(
        max_examples=max(1, round(total / AVERAGE_REQUESTS)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(sequence=requests())
    def run(sequence: list[Request]) -> None:
        for request in sequence:
            send(client, request, ledger)

    run()


@pytest.fixture
def embedded(store: ChdbStore) -> Iterator[TestClient]:
    delivery = EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default()))
    with TestClient(create_app(collector_settings(), delivery)) as client:
        yield client


def test_every_acknowledged_event_is_stored_once_embedded(
    embedded: TestClient, store: ChdbStore
) -> None:
    ledger = Ledger()
    fuzz(embedded, ledger, request_count())
    assert ledger.requests >= request_count() // 2
    assert ledger.statuses[200] > ledger.requests // 4, ledger.statuses  # not all refusals
    assert len(ledger.acknowledged) > 100
    assert_accounted(store, ledger)


@pytest.mark.integration
def test_every_acknowledged_event_is_stored_once_through_kafka(
    kafka_bootstrap: str,
    store: ChdbStore,
    worker_factory: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    names = TopicNames(f"acct{run}.")
    app_id = f"funnel-acct-{run}"
    create_topics(kafka_bootstrap, names, PARTITIONS)
    delivery: Delivery = KafkaDelivery(
        kafka_bootstrap, events_topic=names.events, rejected_topic=names.rejected
    )
    ledger = Ledger()
    with TestClient(create_app(collector_settings(), delivery)) as client:
        fuzz(client, ledger, max(50, request_count() // 5))
    assert len(ledger.acknowledged) > 20

    land_with_one_worker(kafka_bootstrap, store, worker_factory, app_id, names, run, tmp_path)
    assert_accounted(store, ledger)
