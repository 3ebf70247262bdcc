"""Issue 11: a 200 promises the events are stored; every refusal is a reason, never a 500.

Each case was seen against ``funnel serve`` (embedded) and failed before its fix. The store is
the real engine (chDB); every answer is checked against what the store holds.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import funnel.runtime
from dashboards.live import page
from funnel.events import Event
from funnel.intake import POISON
from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from producers.collector.delivery import Receipt
from storage.backends import ChdbStore
from storage.gate import CommitGate
from storage.migrate import migrate
from storage.reports.api import LiveReports
from stream_processors.embedded import GatedPipeline
from stream_processors.state import SavedState
from tests import poison
from tests.servers import READ_KEYS, read_client

KEY, OTHER_KEY = "key-shop", "key-other"
HEADERS = {"X-Funnel-Key": KEY}
LOCAL = {"host": "localhost:8000"}


def event(kind: str = "impression", **fields: object) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "anonymous_id": "a1",
        "occurred_at": "2026-10-01T11:59:00Z",
        **fields,
    }


@contextlib.contextmanager
def serving(store: ChdbStore, saved: SavedState | None = None) -> Iterator[TestClient]:
    """``funnel serve``'s app (embedded) over ``store``; ``saved``: a durable state."""
    settings = CollectorSettings(
        write_keys={KEY: "shop", OTHER_KEY: "other"},  # type: ignore[dict-item]
        read_keys=READ_KEYS,  # type: ignore[arg-type]
        max_body_bytes=4 * 1024 * 1024,
        max_batch=500,
    )
    config = CoreConfig.default()
    gate = CommitGate()
    delivery = EmbeddedDelivery(GatedPipeline(store, config, gate, saved=saved))
    live = LiveReports(store, config.funnels, gate, page=page())
    with read_client(create_app(settings, delivery, live=live)) as test_client:
        yield test_client


@pytest.fixture
def client(store: ChdbStore) -> Iterator[TestClient]:
    with serving(store) as test_client:
        yield test_client


def count(store: ChdbStore, sql: str) -> int:
    [row] = store.query(sql.format(db=store.database))
    return int(row["n"])


def event_ids(store: ChdbStore) -> list[str]:
    rows = store.query(f"SELECT event_id FROM {store.database}.events ORDER BY event_id")
    return [str(r["event_id"]) for r in rows]


def accepted_ids(sent: list[dict[str, Any]], body: dict[str, Any]) -> list[str]:
    refused = {r["index"] for r in body["rejected"]}
    return sorted(str(e["event_id"]) for i, e in enumerate(sent) if i not in refused)


# 1. Acknowledged, then lost: the engine refused the block (too many partitions) in silence.


def test_a_batch_over_many_months_is_stored_not_just_acknowledged(
    client: TestClient, store: ChdbStore
) -> None:
    batch = [
        event(anonymous_id=f"p{i}", occurred_at=f"{2010 + i // 12}-{1 + i % 12:02d}-15T10:00:00Z")
        for i in range(101)
    ]
    alongside = [event(anonymous_id="other-request")]
    response = client.post("/v1/batch", json=batch, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 101, "rejected": []}
    assert client.post("/v1/batch", json=alongside, headers=HEADERS).status_code == 200
    assert event_ids(store) == sorted(str(e["event_id"]) for e in batch + alongside)
    assert (
        count(
            store,
            "SELECT count() AS n FROM {db}.stage_reached WHERE step_index = 1 AND funnel = 'sales'",
        )
        == 102
    )


# 2. One customer stopped ingestion for all: a running total overflowed its column.


def test_a_customer_at_the_amount_limit_does_not_stop_ingestion(
    client: TestClient, store: ChdbStore
) -> None:
    limit = "99999999999999.9999"
    payments = [
        event(
            "payment",
            anonymous_id=None,
            customer_id="whale",
            order_id=f"o{i}",
            revenue=limit,
            currency="USD",
        )
        for i in range(2)
    ]
    for payment in payments:
        response = client.post("/v1/batch", json=[payment], headers=HEADERS)
        assert response.json() == {"accepted": 1, "rejected": []}
    retry = client.post("/v1/batch", json=[payments[1]], headers=HEADERS)
    assert retry.status_code == 200
    other = event(anonymous_id="someone-else")
    assert (
        client.post("/v1/batch", json=[other], headers={"X-Funnel-Key": OTHER_KEY}).status_code
        == 200
    )
    assert event_ids(store) == sorted(str(e["event_id"]) for e in [*payments, other])
    [person] = store.query(
        f"SELECT toString(argMax(revenue, updated_at)) AS revenue FROM {store.database}.persons "
        "WHERE person_id = 'whale'"
    )
    assert Decimal(person["revenue"]) == 2 * Decimal(limit)
    assert count(store, "SELECT count() AS n FROM {db}.rejected_events") == 0


# 3. Unhandled 500s.


def test_deeply_nested_json_is_a_400(client: TestClient) -> None:
    body = "[" * 100_000 + "]" * 100_000
    response = client.post("/v1/batch", content=body, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"] == "json_too_deep"


def test_times_at_the_ends_of_the_calendar_are_refused_with_a_reason(
    client: TestClient, store: ChdbStore
) -> None:
    item = event(sent_at="0001-01-01T00:00:00Z", occurred_at="9999-12-31T23:59:59Z")
    response = client.post("/v1/batch", json=[item], headers=HEADERS)
    assert response.status_code == 400
    [rejected] = response.json()["rejected"]
    assert {e["code"] for e in rejected["errors"]} == {"time_out_of_range"}
    assert {e["field"] for e in rejected["errors"]} == {"occurred_at", "sent_at"}
    assert event_ids(store) == []


@pytest.mark.parametrize(
    "query",
    [
        "lookback_days=99999999999",
        "lookback_days=-5",
        "to=9999-12-31",
        "from=0001-01-01T00:00:00%2B01:00",
        "from=1990-01-01",
    ],
)
def test_report_parameters_out_of_range_are_a_400(client: TestClient, query: str) -> None:
    response = client.get(f"/api/reports/attribution?{query}", headers=LOCAL)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_report_request"


class _Broken:
    """A destination with a bug in it (not a store or a broker: those are real elsewhere)."""

    async def start(self) -> None: ...

    async def deliver(self, events: list[Event]) -> Receipt:
        raise RuntimeError("a bug")

    async def dead_letter(self, rejections: object, received_at: datetime) -> None: ...

    async def close(self) -> None: ...

    def problem(self) -> str | None:
        return None


def test_an_unexpected_error_is_answered_and_counted() -> None:
    settings = CollectorSettings(write_keys={KEY: "shop"}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    with read_client(create_app(settings, _Broken())) as broken:
        response = broken.post("/v1/batch", json=[event()], headers=HEADERS)
        assert response.status_code == 500
        assert response.json()["error"] == "internal_error"
        metrics = broken.get("/metrics").text
    assert 'funnel_collector_requests_total{route="batch",status="500"} 1.0' in metrics


# 4. Values the store cannot hold, or should not.


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"seq": 10**30}, "seq", "less_than_equal"),
        ({"occurred_at": "0001-01-01T00:00:00Z"}, "occurred_at", "time_out_of_range"),
        ({"occurred_at": "1800-06-01T00:00:00Z"}, "occurred_at", "time_out_of_range"),
        ({"revenue": "10", "currency": "ZZZ", "order_id": "o"}, "currency", "currency_unknown"),
        ({"lead": {"form": "demo", "notes": "x" * 1000}}, "lead.notes", "extra_forbidden"),
    ],
)
def test_values_the_store_cannot_hold_are_refused_per_field(
    client: TestClient, store: ChdbStore, fields: dict[str, object], field: str, code: str
) -> None:
    item = event("lead", **fields)
    response = client.post("/v1/batch", json=[item], headers=HEADERS)
    assert response.status_code == 400
    [rejected] = response.json()["rejected"]
    assert (field, code) in {(e["field"], e["code"]) for e in rejected["errors"]}
    assert event_ids(store) == []
    assert count(store, "SELECT count() AS n FROM {db}.rejected_events") == 1


def test_nan_and_infinity_in_properties_are_refused(client: TestClient, store: ChdbStore) -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        item = json.dumps(event("click", properties={"x": "TOKEN"}))
        body = "[" + item.replace('"TOKEN"', token) + "]"
        response = client.post("/v1/batch", content=body, headers=HEADERS)
        assert response.status_code == 400, token
        codes = {e["code"] for e in response.json()["rejected"][0]["errors"]}
        assert "finite_number" in codes
    assert event_ids(store) == []


def test_one_event_id_under_two_persons_is_stored_once(
    client: TestClient, store: ChdbStore
) -> None:
    first = event("click", anonymous_id="device-1")
    second = {**first, "anonymous_id": "device-2"}
    for item in (first, second):
        assert client.post("/v1/batch", json=[item], headers=HEADERS).status_code == 200
    assert event_ids(store) == [first["event_id"]]


def test_media_types_are_case_insensitive(client: TestClient, store: ChdbStore) -> None:
    item = event()
    response = client.post(
        "/v1/batch",
        content=f'[{{"event_id": "{item["event_id"]}", "type": "impression", '
        '"anonymous_id": "a", "occurred_at": "2026-10-01T10:00:00Z"}]',
        headers={**HEADERS, "Content-Type": "APPLICATION/JSON; charset=UTF-8"},
    )
    assert response.status_code == 200, response.text
    assert event_ids(store) == [item["event_id"]]


# 5. DNS rebinding: the read side answers the allowed host names only.


@pytest.mark.parametrize("path", ["/", "/api/live", "/api/reports/funnel", "/api/owner"])
def test_the_read_side_answers_allowed_hosts_only(client: TestClient, path: str) -> None:
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example"):
        refused = client.get(path, headers={"host": host})
        assert refused.status_code == 400
        assert refused.json()["error"] == "host_not_allowed"
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get(path, headers={"host": host}).status_code == 200


def test_ingestion_answers_any_host(client: TestClient) -> None:
    response = client.post(
        "/v1/batch", json=[event()], headers={**HEADERS, "host": "collector.example.com"}
    )
    assert response.status_code == 200


def test_allowed_hosts_come_from_the_environment() -> None:
    settings = CollectorSettings.from_env({"FUNNEL_ALLOWED_HOSTS": "stats.example.com,*.corp"})
    assert settings.host_allowed("stats.example.com:443")
    assert settings.host_allowed("eu.corp")
    assert not settings.host_allowed("localhost")
    assert CollectorSettings.from_env({"FUNNEL_ALLOWED_HOSTS": "*"}).host_allowed("anything")


# Poison isolation: a value that passes validation but not the store.


def test_an_event_the_store_refuses_is_a_per_item_refusal_and_blocks_nothing(
    client: TestClient, store: ChdbStore
) -> None:
    store.execute(
        f"ALTER TABLE {store.database}.events ADD CONSTRAINT no_poison CHECK url != 'poison'"
    )
    good, poison = event(anonymous_id="g"), event(anonymous_id="p", context={"url": "poison"})
    response = client.post("/v1/batch", json=[poison, good], headers=HEADERS)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    [refused] = body["rejected"]
    assert refused["index"] == 0
    assert refused["errors"][0]["code"] == "store_refused"
    assert "no_poison" in refused["errors"][0]["reason"]
    after = event(anonymous_id="after")
    assert client.post("/v1/batch", json=[after], headers=HEADERS).json()["accepted"] == 1
    assert event_ids(store) == sorted([good["event_id"], after["event_id"]])
    [dead] = store.query(f"SELECT reason, payload FROM {store.database}.rejected_events")
    assert "store_refused" in dead["reason"]
    assert poison["event_id"] in dead["payload"]


def test_an_event_the_runtime_raises_on_is_a_per_item_refusal_and_blocks_nothing(
    store: ChdbStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(funnel.runtime, "process", poison._poisoned)  # a bug on demand
    saved = SavedState(tmp_path / "state.db", config=CoreConfig.default())
    bad = event("lead", anonymous_id="p", properties={poison.MARK[0]: poison.MARK[1]})
    good = event("lead", anonymous_id="g")
    with serving(store, saved) as client:
        first = client.post("/v1/batch", json=[bad, good], headers=HEADERS)
        assert first.status_code == 200
        body = first.json()
        assert body["accepted"] == 1
        expected = {"field": "$runtime", "reason": poison.REASON, "code": POISON}
        assert body["rejected"] == [{"index": 0, "errors": [expected]}]
        # The client sends it again (it cannot tell a bug from a passing fault): refused
        # again, recorded once. The pipeline goes on.
        again = client.post("/v1/batch", json=[bad], headers=HEADERS)
        assert again.status_code == 400
        assert again.json()["rejected"] == [{"index": 0, "errors": [expected]}]
        after = event(anonymous_id="after")
        assert client.post("/v1/batch", json=[after], headers=HEADERS).json()["accepted"] == 1
        metrics = client.get("/metrics").text
    saved.close()
    # Counted as refused, not as a duplicate.
    assert 'funnel_collector_events_total{outcome="duplicate"}' not in metrics
    assert 'funnel_collector_events_total{outcome="rejected"} 2.0' in metrics
    assert 'funnel_collector_rejections_total{reason="runtime_error"} 2.0' in metrics
    assert event_ids(store) == sorted([good["event_id"], after["event_id"]])
    [dead] = store.query(f"SELECT reason, payload FROM {store.database}.rejected_events")
    assert json.loads(dead["reason"]) == [expected]
    assert json.loads(dead["payload"])["event_id"] == bad["event_id"]


def test_a_derived_fact_the_store_refuses_is_dead_lettered_and_the_event_kept(
    client: TestClient, store: ChdbStore
) -> None:
    store.execute(
        f"ALTER TABLE {store.database}.persons ADD CONSTRAINT no_whale CHECK person_id != 'whale'"
    )
    whale, other = event(anonymous_id="whale"), event(anonymous_id="minnow")
    for item in (whale, other):
        assert client.post("/v1/batch", json=[item], headers=HEADERS).json()["accepted"] == 1
    assert event_ids(store) == sorted([whale["event_id"], other["event_id"]])
    persons = store.query(f"SELECT DISTINCT person_id FROM {store.database}.persons")
    assert [p["person_id"] for p in persons] == ["minnow"]
    assert count(store, "SELECT count() AS n FROM {db}.rejected_events") >= 1


def test_a_fresh_database_is_migrated_to_the_wide_revenue(store: ChdbStore) -> None:
    [column] = store.query(
        "SELECT type FROM system.columns WHERE database = {db:String} AND table = 'persons' "
        "AND name = 'revenue'",
        {"db": store.database},
    )
    assert column["type"] == "Decimal(38, 4)"
    assert migrate(store) == []
