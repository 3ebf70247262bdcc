"""The collector in embedded mode: HTTP in, facts committed to the real engine (chDB)."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from funnel.events import Event
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline
from tests.servers import READ_KEYS, read_client

KEY = "test-key-shop"
HEADERS = {"X-Funnel-Key": KEY}


def event(kind: str = "click", **fields: object) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "anonymous_id": "a1",
        "occurred_at": "2026-10-01T11:59:00Z",
        **fields,
    }


@pytest.fixture
def client(store: ChdbStore) -> Iterator[TestClient]:
    settings = CollectorSettings(
        write_keys={KEY: "shop", "other-key": "other"},  # type: ignore[dict-item]
        read_keys=READ_KEYS,  # type: ignore[arg-type]
        cors_origins=("https://shop.example",),
        max_body_bytes=64 * 1024,
        max_batch=100,
    )
    delivery = EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default()))
    with read_client(create_app(settings, delivery)) as test_client:
        yield test_client


def stored(store: ChdbStore, sql: str) -> list[dict[str, object]]:
    return store.query(sql.format(db=store.database))


def test_mixed_batch_keeps_the_valid_and_dead_letters_the_rest(
    client: TestClient, store: ChdbStore
) -> None:
    good = [event("impression", context={"utm_medium": "email"}), event("click")]
    body = [good[0], {"type": "click"}, good[1], "junk"]
    response = client.post("/v1/batch", json=body, headers=HEADERS)
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 2
    assert [r["index"] for r in result["rejected"]] == [1, 3]
    assert all(r["errors"] and r["errors"][0]["reason"] for r in result["rejected"])
    rows = stored(store, "SELECT event_id, channel FROM {db}.events ORDER BY occurred_at")
    assert {r["event_id"] for r in rows} == {e["event_id"] for e in good}
    [dead] = stored(store, "SELECT count() AS n FROM {db}.rejected_events")
    assert dead["n"] == 2
    metrics = client.get("/metrics").text
    assert 'funnel_collector_events_total{outcome="accepted"} 2.0' in metrics
    assert 'funnel_collector_events_total{outcome="rejected"} 2.0' in metrics


def test_acknowledged_means_committed(client: TestClient, store: ChdbStore) -> None:
    batch = [event("impression", anonymous_id=f"p{i}") for i in range(50)]
    assert client.post("/v1/batch", json=batch, headers=HEADERS).status_code == 200
    [row] = stored(store, "SELECT count() AS n FROM {db}.events")
    assert row["n"] == 50  # visible the moment the 200 arrived, not eventually
    [stages] = stored(store, "SELECT count() AS n FROM {db}.stage_reached WHERE funnel = 'sales'")
    assert stages["n"] == 50


def test_beacon_text_plain_and_gzip_bodies(client: TestClient, store: ChdbStore) -> None:
    plain = client.post(
        "/v1/batch?key=" + KEY,
        content=json.dumps([event()]),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert plain.status_code == 200
    zipped = client.post(
        "/v1/batch",
        content=gzip.compress(json.dumps([event(), event()]).encode()),
        headers={**HEADERS, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert zipped.json() == {"accepted": 2, "rejected": []}


def test_single_event_endpoint(client: TestClient) -> None:
    response = client.post("/v1/event", json=event("lead", customer_id="c1"), headers=HEADERS)
    assert response.json() == {"accepted": 1, "rejected": []}


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": [event()]}, 401, "unauthorized"),
        ({"json": [event()], "headers": {"X-Funnel-Key": "wrong"}}, 401, "unauthorized"),
        ({"content": b"{not json", "headers": HEADERS}, 400, "invalid_json"),
        ({"json": {"type": "click"}, "headers": HEADERS}, 400, "not_a_batch"),
        ({"json": [event()] * 101, "headers": HEADERS}, 400, "batch_too_long"),
        ({"content": b"[" + b" " * 70_000 + b"]", "headers": HEADERS}, 413, "body_too_large"),
        (
            {
                "content": gzip.compress(b"[" + b" " * 200_000 + b"]"),
                "headers": {**HEADERS, "Content-Encoding": "gzip"},
            },
            413,
            "body_too_large",
        ),
        ({"content": b"x", "headers": {**HEADERS, "Content-Encoding": "gzip"}}, 400, "bad_gzip"),
        (
            {"content": b"[]", "headers": {**HEADERS, "Content-Type": "application/xml"}},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_whole_request_errors_are_machine_readable(
    client: TestClient, kwargs: dict[str, object], status: int, code: str
) -> None:
    response = client.post("/v1/batch", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["message"]


def test_a_key_writes_only_its_own_site(client: TestClient) -> None:
    response = client.post("/v1/batch", json=[event(site_id="other")], headers=HEADERS)
    assert response.status_code == 400
    [rejected] = response.json()["rejected"]
    assert rejected["errors"][0]["code"] == "site_mismatch"


def test_every_item_rejected_is_a_400_with_indexes(client: TestClient) -> None:
    response = client.post("/v1/batch", json=[{"type": "x"}, {}], headers=HEADERS)
    assert response.status_code == 400
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1]


def test_pixel_records_an_impression(client: TestClient, store: ChdbStore) -> None:
    response = client.get(
        f"/v1/p.gif?key={KEY}&type=impression&aid=mail-1&utm_medium=email&utm_campaign=nov",
        headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    [row] = stored(store, "SELECT channel, campaign, event_type FROM {db}.events")
    assert row == {"channel": "Email", "campaign": "nov", "event_type": "impression"}
    bad = client.get(f"/v1/p.gif?key={KEY}&type=order&aid=x")
    assert bad.status_code == 400


def test_cors_only_for_configured_origins(client: TestClient) -> None:
    allowed = client.options(
        "/v1/batch",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
    denied = client.post(
        "/v1/batch", json=[event()], headers={**HEADERS, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in denied.headers
    # The intake routes skip Starlette's router, not CORS: a simple request from an allowed
    # origin gets the header on its answer, and other methods still get 405.
    sent = client.post(
        "/v1/batch", json=[event()], headers={**HEADERS, "Origin": "https://shop.example"}
    )
    assert sent.status_code == 200
    assert sent.headers.get("access-control-allow-origin") == "https://shop.example"
    assert "Retry-After" in sent.headers.get("access-control-expose-headers", "")
    assert client.get("/v1/batch").status_code == 405
    assert client.put("/v1/event", json={}).status_code == 405


def test_store_down_answers_503_never_2xx(store: ChdbStore, chdb_engine: ChdbStore) -> None:
    settings = CollectorSettings(write_keys={KEY: "shop"}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    broken = chdb_engine.using(f"gone_{uuid.uuid4().hex[:8]}")
    delivery = EmbeddedDelivery(EmbeddedPipeline(broken, CoreConfig.default()))
    with read_client(create_app(settings, delivery)) as test_client:
        # The database has no tables (never migrated): every commit fails in ClickHouse.
        response = test_client.post("/v1/batch", json=[event()], headers=HEADERS)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "unavailable"


def test_tracker_script_and_openapi_are_served(client: TestClient) -> None:
    script = client.get("/t.js", headers={"Accept-Encoding": "gzip"})
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert b"funnel" in script.content
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/v1/batch", "/v1/event", "/v1/p.gif"}
    assert "Event" in spec["components"]["schemas"]


class _FailingOnce(EmbeddedPipeline):
    """The real pipeline with a bug that strikes once (not the store: that is a 503 anyway)."""

    struck = False

    def submit(self, event: Event) -> bool:
        if not self.struck:
            self.struck = True
            raise RuntimeError("a bug in the committer (a test)")
        return super().submit(event)


def test_a_committer_crash_answers_503_reports_it_and_starts_over(store: ChdbStore) -> None:
    """Issue 14: the requests in flight get an answer, /health says why, the next commit works."""
    settings = CollectorSettings(write_keys={KEY: "shop"}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    delivery = EmbeddedDelivery(_FailingOnce(store, CoreConfig.default()))
    with read_client(create_app(settings, delivery)) as test_client:
        first = test_client.post("/v1/batch", json=[event()], headers=HEADERS)
        assert first.status_code == 503
        health = test_client.get("/health")
        assert health.status_code == 503
        assert "a bug in the committer" in health.json()["reason"]
        retry = test_client.post("/v1/batch", json=[event()], headers=HEADERS)
        assert retry.status_code == 200
        assert test_client.get("/health").json() == {"status": "ok"}
    assert delivery.committer_failures == 1
    assert stored(store, "SELECT count() AS n FROM {db}.events") == [{"n": 1}]


def test_the_status_timer_runs_on_schedule_under_steady_traffic(store: ChdbStore) -> None:
    """Issue 14: the timer is not starved by requests arriving more often than its period."""
    settings = CollectorSettings(write_keys={KEY: "shop"}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    delivery = EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default()), status_every_s=0.2)
    with read_client(create_app(settings, delivery)) as test_client:
        while delivery.timer_runs < 3:  # ends only if the timer runs between requests
            response = test_client.post("/v1/batch", json=[event()], headers=HEADERS)
            assert response.status_code == 200
    assert delivery.commits > delivery.timer_runs
