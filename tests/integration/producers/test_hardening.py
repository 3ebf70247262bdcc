"""Every response of ``funnel serve`` carries the hardening headers, and the live page its CSP
(issue 19, in part). The store is the real engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from dashboards.live import page
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from storage.backends import ChdbStore
from storage.gate import CommitGate
from storage.reports.api import LiveReports, page_policy
from stream_processors.embedded import GatedPipeline
from tests.servers import READ_KEYS, read_client

KEY = "wk_hardening_test_key"


@pytest.fixture
def served(store: ChdbStore) -> Iterator[TestClient]:
    config = CoreConfig.default()
    gate = CommitGate()
    delivery = EmbeddedDelivery(GatedPipeline(store, config, gate))
    live = LiveReports(store, config.funnels, gate, page=page())
    settings = CollectorSettings(write_keys={KEY: "shop"}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    with read_client(create_app(settings, delivery, live=live)) as client:
        yield client


def test_every_response_is_hardened_and_the_page_has_its_policy(served: TestClient) -> None:
    local = {"host": "localhost"}
    responses = [
        served.get("/health"),
        served.post("/v1/batch", content=b"[]", headers={"X-Funnel-Key": KEY}),
        served.post("/v1/batch", content=b"[]", headers={"X-Funnel-Key": "wrong"}),
        served.get("/api/reports/funnel", headers=local),
        served.get("/", headers=local),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["referrer-policy"] == "no-referrer", response.url
    assert responses[2].status_code == 401
    assert responses[-1].headers["content-security-policy"] == page_policy(page())
