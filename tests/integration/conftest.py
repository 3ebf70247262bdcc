"""Fixtures for the integration tests: one real Apache Kafka broker for the whole session.

``kafka_bootstrap`` starts a single-node KRaft broker (:class:`KafkaBroker`, from the Maven
jars, fetched on first use) and stops it when the session ends. Set ``FUNNEL_TEST_KAFKA`` to a
bootstrap address (``host:port``) to run against an existing broker instead; nothing is
started or stopped then. Tests never mock Kafka and never skip for want of one.

``clickhouse_server`` starts a private ``clickhouse-server`` process (Debian's 18.16 in CI) on
free loopback ports for the server backend's transport tests, which stop and restart it; it is
always started here (those tests need to control it) and stopped when the session ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.kafka_broker import KafkaBroker
from tests.clickhouse_server import ClickHouseServer

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


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """A running ClickHouse server of this session's own (restartable on the same port/data).

    A test that stops it must start it again before it returns (``try``/``finally``).
    """
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
