"""Read keys and rate limits (issue 19): the report API, the live data, the owner probe, the
live page and ``/metrics`` answer only a valid read key of the right site; an address, a key
and wrong keys are held to their rates (429 with Retry-After). The store is the real engine,
holding two sites' events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from dashboards.live import page
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from producers.collector.limits import Limit, RateLimits
from storage.backends import ChdbStore
from storage.gate import CommitGate
from storage.reports.api import LiveReports
from stream_processors.embedded import GatedPipeline

WRITE = {"wk-shop-0001": "shop", "wk-blog-0001": "blog"}
ALL, SHOP, BOTH = "rk-all-sites-0001", "rk-shop-only-0001", "rk-shop-and-blog-01"
LOCAL = {"host": "localhost"}
#: What answers without any key, and why that is no leak: liveness, the tracker script and
#: the API description (no data), ingestion (a write key, checked by its own tests).
PUBLIC = {"/health", "/t.js", "/openapi.json", "/v1/p.gif"}


def bearer(key: str) -> dict[str, str]:
    return {**LOCAL, "Authorization": f"Bearer {key}"}


def app_client(store: ChdbStore, **settings: object) -> TestClient:
    """A client of ``funnel serve``'s app on ``store`` (the write keys of :data:`WRITE`)."""
    config = CoreConfig.default()
    gate = CommitGate()
    delivery = EmbeddedDelivery(GatedPipeline(store, config, gate))
    live = LiveReports(store, config.funnels, gate, page=page())
    app = create_app(CollectorSettings(write_keys=WRITE, **settings), delivery, live=live)  # type: ignore[arg-type]
    return TestClient(app)


@pytest.fixture
def client(store: ChdbStore) -> Iterator[TestClient]:
    with app_client(
        store,
        read_keys={ALL: "*", SHOP: ["shop"], BOTH: ["shop", "blog"]},
        rate_limits=None,  # the leak test presents wrong keys on purpose (limits: below)
    ) as test_client:
        now = datetime.now(UTC).isoformat()
        for key, site in WRITE.items():
            events = [
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "impression",
                    "anonymous_id": f"{site}-visitor-{i}",
                    "occurred_at": now,
                }
                for i in range(3 if site == "shop" else 5)
            ]
            sent = test_client.post("/v1/batch", json=events, headers={"X-Funnel-Key": key})
            assert sent.json()["accepted"] == len(events)
        yield test_client


def get_routes(client: TestClient) -> list[str]:
    """Every GET path the app routes (the collector's and the read side's)."""
    app = client.app
    while not hasattr(app, "routes"):  # through the CORS and intake wrappers
        app = getattr(app, "app")  # noqa: B009
    return sorted(
        r.path.replace("{name}", "funnel")
        for r in app.routes
        if isinstance(r, Route) and "GET" in (r.methods or ())
    )


def test_no_endpoint_answers_data_without_a_read_key(client: TestClient) -> None:
    paths = get_routes(client)
    assert {"/", "/api/live", "/api/owner", "/api/reports/funnel", "/metrics"} <= set(paths)
    for path in paths:
        if path in PUBLIC:
            continue
        for headers in (LOCAL, bearer("wrong"), {**LOCAL, "Cookie": "funnel_read=wrong"}):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 401, (path, headers, answer.text)
            assert "visitor" not in answer.text
            assert "shop" not in answer.text
    assert client.get("/v1/p.gif").status_code == 401  # ingestion: a write key


def test_a_key_reads_its_sites_only(client: TestClient) -> None:
    def visitors(key: str, query: str = "") -> int:
        answer = client.get(f"/api/reports/funnel{query}", headers=bearer(key))
        assert answer.status_code == 200, answer.text
        return int(answer.json()["steps"][0]["count"])

    assert visitors(ALL, "?site=shop") == 3
    assert visitors(ALL, "?site=blog") == 5
    assert visitors(SHOP) == 3  # a one-site key reads its site without saying so
    assert visitors(SHOP, "?site=shop") == 3
    assert visitors(BOTH, "?site=blog") == 5
    for key, query in ((SHOP, "?site=blog"), (BOTH, ""), (BOTH, "?site=other")):
        answer = client.get(f"/api/reports/funnel{query}", headers=bearer(key))
        assert answer.status_code == 403, (key, query)
        assert answer.json()["error"] == "forbidden"
    live = client.get("/api/live?site=blog", headers=bearer(SHOP))
    assert live.status_code == 403
    assert client.get("/api/live", headers=bearer(SHOP)).json()["stored_events"] == 3


def test_metrics_need_a_key_of_every_site(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(SHOP)).status_code == 403
    metrics = client.get("/metrics", headers=bearer(ALL))
    assert metrics.status_code == 200
    assert "funnel_collector_events_total" in metrics.text


def test_the_page_asks_for_a_key_and_keeps_it_in_a_strict_cookie(client: TestClient) -> None:
    form = client.get("/", headers=LOCAL)
    assert form.status_code == 401
    assert 'action="/login"' in form.text
    assert "form-action 'self'" in form.headers["content-security-policy"]
    refused = client.post("/login", data={"key": "wrong"}, headers=LOCAL, follow_redirects=False)
    assert refused.status_code == 401
    assert "not valid" in refused.text
    assert "set-cookie" not in refused.headers
    rebound = client.post(
        "/login", data={"key": SHOP}, headers={"host": "evil.example"}, follow_redirects=False
    )
    assert rebound.status_code == 400
    opened = client.post("/login", data={"key": SHOP}, headers=LOCAL, follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/"
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    # The browser sends the cookie back: the page and its site's data open.
    page_now = client.get("/", headers=LOCAL)
    assert page_now.status_code == 200
    assert 'id="funnel"' in page_now.text
    assert client.get("/api/live", headers=LOCAL).json()["stored_events"] == 3
    assert client.get("/api/live?site=blog", headers=LOCAL).status_code == 403


# Rate limits (issue 19): per client address, per key, and tighter for wrong keys.


def limited_client(store: ChdbStore, limits: RateLimits) -> TestClient:
    # each test client its own address (X-Forwarded-For)
    return app_client(store, read_keys={ALL: "*"}, rate_limits=limits, trust_forwarded_for=True)


def impressions(n: int) -> list[dict[str, object]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "type": "impression",
            "anonymous_id": "v",
            "occurred_at": now,
        }
        for _ in range(n)
    ]


def test_an_address_over_its_rate_gets_429_with_retry_after(store: ChdbStore) -> None:
    generous = Limit(rate=1000, burst=1000)
    limits = RateLimits(per_address=Limit(rate=0.5, burst=5), per_key=generous)
    with limited_client(store, limits) as client:
        one = {"X-Funnel-Key": "wk-shop-0001", "X-Forwarded-For": "203.0.113.7"}
        answers = [client.post("/v1/batch", json=impressions(1), headers=one) for _ in range(8)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
        refused = answers[-1]
        assert refused.json()["error"] == "rate_limited"
        assert refused.headers["retry-after"] == "2"
        # Another address is not held back; what got a 200 is stored, the 429s are not.
        other = {**one, "X-Forwarded-For": "198.51.100.9"}
        assert client.post("/v1/batch", json=impressions(1), headers=other).status_code == 200
        [stored] = store.query(f"SELECT count() AS n FROM {store.database}.events")
        assert stored["n"] == 6
        # Reads count against the address too.
        reads = {**bearer(ALL), "X-Forwarded-For": "203.0.113.7"}
        assert client.get("/api/live", headers=reads).status_code == 429


def test_wrong_keys_are_limited_more_tightly(store: ChdbStore) -> None:
    limits = RateLimits(
        per_address=Limit(rate=1000, burst=1000),
        per_key=Limit(rate=1000, burst=1000),
        failed_keys=Limit(rate=0.1, burst=3),
    )
    with limited_client(store, limits) as client:
        guesser = {"X-Forwarded-For": "192.0.2.66"}
        statuses = [
            client.post(
                "/v1/batch", json=[], headers={**guesser, "X-Funnel-Key": f"guess-{n}"}
            ).status_code
            for n in range(6)
        ]
        assert statuses == [401, 401, 401, 429, 429, 429]
        # Locked out: even the right key waits, and so do read-key guesses at the login form.
        right = {**guesser, "X-Funnel-Key": "wk-shop-0001"}
        late = client.post("/v1/batch", json=impressions(1), headers=right)
        assert late.status_code == 429
        assert int(late.headers["retry-after"]) >= 1
        login = client.post("/login", data={"key": ALL}, headers={**guesser, **LOCAL})
        assert login.status_code == 429
        # Another address is not locked out; a missing key is no guess.
        honest = {"X-Forwarded-For": "192.0.2.1"}
        for _ in range(5):
            assert client.post("/v1/batch", json=[], headers=honest).status_code == 401
        assert (
            client.post(
                "/v1/batch", json=impressions(1), headers={**honest, "X-Funnel-Key": "wk-shop-0001"}
            ).status_code
            == 200
        )


def test_a_key_over_its_rate_gets_429(store: ChdbStore) -> None:
    limits = RateLimits(per_address=Limit(rate=1000, burst=1000), per_key=Limit(rate=0.5, burst=2))
    with limited_client(store, limits) as client:
        statuses = [
            client.post(
                "/v1/batch",
                json=impressions(1),
                headers={"X-Funnel-Key": "wk-shop-0001", "X-Forwarded-For": f"10.0.0.{n}"},
            ).status_code
            for n in range(4)
        ]
        assert statuses == [200, 200, 429, 429]
        blog = {"X-Funnel-Key": "wk-blog-0001", "X-Forwarded-For": "10.0.0.9"}
        assert client.post("/v1/batch", json=impressions(1), headers=blog).status_code == 200


def test_a_full_read_side_answers_503_and_ingestion_goes_on(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.reports.api as api

    monkeypatch.setattr(api, "MAX_READS", 0)  # every read finds the read side full
    busy = client.get("/api/reports/funnel?site=shop", headers=bearer(ALL))
    assert busy.status_code == 503
    assert busy.json()["error"] == "busy"
    assert busy.headers["retry-after"] == "1"
    sent = client.post("/v1/batch", json=impressions(2), headers={"X-Funnel-Key": "wk-shop-0001"})
    assert sent.json()["accepted"] == 2
