"""Property tests of the collector: junk never causes a 5xx, and every refusal says why.

Thousands of generated requests run against the real app with the embedded store behind it.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline

KEY = "fuzz-key"
FUZZ = settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["impression", "click", "lead", "order", "payment", "repeat"]))
    event: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        "type": kind,
        "anonymous_id": draw(st.text("abcdef0123456789-", min_size=1, max_size=20)),
        "occurred_at": draw(
            st.sampled_from(["2026-10-01T10:00:00Z", "2026-10-02T11:30:15.250+02:00"])
        ),
        "seq": draw(st.none() | st.integers(0, 10_000)),
        "properties": draw(
            st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=5)
        ),
    }
    if draw(st.booleans()):
        event["context"] = {
            "utm_source": "google",
            "utm_medium": draw(st.sampled_from(["cpc", "email"])),
        }
    if kind in ("order", "payment", "repeat"):
        event.update(
            order_id="o-1", revenue=draw(st.sampled_from(["10.50", 99, 0])), currency="EUR"
        )
    return {k: v for k, v in event.items() if v is not None}


@st.composite
def broken_events(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(valid_events())
    how = draw(st.integers(0, 9))
    if how == 0:
        del event[draw(st.sampled_from(["event_id", "type", "occurred_at"]))]
    elif how == 1:
        event["type"] = draw(
            st.text(max_size=10).filter(lambda t: t not in {"impression", "click"})
        )
    elif how == 2:
        event["occurred_at"] = draw(st.sampled_from(["2026-10-01T10:00:00", "soon", 12, None]))
    elif how == 3:
        event["seq"] = draw(st.integers(max_value=-1))
    elif how == 4:
        event["anonymous_id"] = None
    elif how == 5:
        event["properties"] = {f"p{i}": i for i in range(51)}
    elif how == 6:
        event["context"] = {"utm_campaign": "x" * 600}
    elif how == 7:
        event.update(revenue="-3", currency="EUR")
    elif how == 8:
        event["unexpected"] = draw(json_values)
    else:
        event["properties"] = {"nested": {"not": "scalar"}}
    return event


@pytest.fixture
def client(store: ChdbStore) -> Iterator[TestClient]:
    app_settings = CollectorSettings(
        write_keys={KEY: "fuzz"},  # type: ignore[dict-item]
        max_body_bytes=32 * 1024,
        max_batch=50,
    )
    delivery = EmbeddedDelivery(EmbeddedPipeline(store, CoreConfig.default()))
    with TestClient(create_app(app_settings, delivery)) as test_client:
        yield test_client


def assert_explained(response: Any) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        if "error" in body:
            assert body["error"]
            assert body["message"]
        else:
            assert body["rejected"]
    for rejected in body.get("rejected", []):
        assert rejected["errors"]
        assert all(e["field"] and e["reason"] and e["code"] for e in rejected["errors"])


@FUZZ
@given(
    body=st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "text/plain", "application/xml", ""]),
    gzipped=st.booleans(),
    keyed=st.booleans(),
)
def test_arbitrary_bodies_never_cause_a_5xx(
    client: TestClient, body: bytes, content_type: str, gzipped: bool, keyed: bool
) -> None:
    headers = {"Content-Type": content_type}
    if keyed:
        headers["X-Funnel-Key"] = KEY
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body) if len(body) % 2 else body  # half of them are not gzip
    for path in ("/v1/batch", "/v1/event"):
        assert_explained(client.post(path, content=body, headers=headers))


@settings(FUZZ, max_examples=250)
@given(items=st.lists(st.one_of(valid_events(), broken_events(), json_values), max_size=40))
def test_mixed_batches_keep_every_valid_event(
    client: TestClient, store: ChdbStore, items: list[Any]
) -> None:
    response = client.post("/v1/batch", json=items, headers={"X-Funnel-Key": KEY})
    assert_explained(response)
    body = response.json()
    rejected = {r["index"] for r in body["rejected"]}
    valid = [i for i, item in enumerate(items) if i not in rejected]
    assert body["accepted"] == len(valid)
    ids = {str(items[i]["event_id"]).lower() for i in valid}
    if ids:
        stored = store.query(f"SELECT DISTINCT event_id FROM {store.database}.events")
        assert ids <= {r["event_id"] for r in stored}


@settings(FUZZ, max_examples=500)
@given(
    params=st.dictionaries(
        st.sampled_from(["type", "aid", "cid", "eid", "ts", "url", "utm_source", "gclid", "key"]),
        st.text(max_size=40),
        max_size=9,
    )
)
def test_pixel_never_causes_a_5xx(client: TestClient, params: dict[str, str]) -> None:
    params.setdefault("key", KEY)
    response = client.get("/v1/p.gif", params=params)
    assert response.status_code < 500
    if response.status_code != 200:
        assert_explained(response)
