"""Fixtures for the integration tests: one real Apache Kafka broker for the whole session.

``kafka_bootstrap`` starts a single-node KRaft broker (:class:`KafkaBroker`, from the Maven
jars, fetched on first use) and stops it when the session ends. Set ``FUNNEL_TEST_KAFKA`` to a
bootstrap address (``host:port``) to run against an existing broker instead; nothing is
started or stopped then. Tests never mock Kafka and never skip for want of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stream_processors.kafka_broker import KafkaBroker

KAFKA_ENV = "FUNNEL_TEST_KAFKA"
START_TIMEOUT_S = 180.0  # a cold cache also fetches the jars (seconds) and writes the CDS archive


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address (``host:port``) of a real Kafka broker serving this session."""
    existing = os.environ.get(KAFKA_ENV, "").strip()
    if existing:
        yield existing
        return
    # The data lives in a temporary directory the broker removes on stop; the log is kept
    # under pytest's basetemp so a failing run can be diagnosed.
    log_file = tmp_path_factory.mktemp("kafka") / "kafka.log"
    broker = KafkaBroker(log_file=log_file)
    try:
        yield broker.start(timeout=START_TIMEOUT_S)
    finally:
        broker.stop()
