"""The event contract (DESIGN §4) at the edge."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.events import EARLIEST, LATEST, EventType, InvalidEvent, parse_event

VALID = {
    "event_id": "3f2c1e6a-8a4b-4c1d-9d3e-2b1a0c9f8e7d",
    "type": "order",
    "site_id": "shop",
    "anonymous_id": "a1",
    "customer_id": "c1",
    "occurred_at": "2026-10-01T10:00:00.250+02:00",
    "order_id": "o-1",
    "revenue": "99.90",
    "currency": "EUR",
    "context": {"utm_source": "google", "gclid": "x"},
    "properties": {"coupon": "AUTUMN", "items": 3},
}


def test_valid_event_parses_typed() -> None:
    event = parse_event(VALID)
    assert event.type is EventType.ORDER
    assert event.occurred_at == datetime(2026, 10, 1, 8, 0, 0, 250_000, tzinfo=UTC)
    assert event.revenue == Decimal("99.90")
    assert event.partition_key == "shop:a1"
    assert event.context.click_ids() == {"gclid": "x"}


def test_customer_only_event_is_keyed_by_customer() -> None:
    data = {**VALID, "anonymous_id": None}
    assert parse_event(data).partition_key == "shop:c1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "purchase"}, "type"),
        ({"occurred_at": "2026-10-01T10:00:00"}, "occurred_at"),
        ({"event_id": "not a uuid!"}, "event_id"),
        ({"event_id": "--------"}, "event_id"),
        ({"currency": "euro"}, "currency"),
        ({"revenue": "-1"}, "revenue"),
        ({"seq": -3}, "seq"),
        ({"context": {"utm_source": "x" * 600}}, "context.utm_source"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_field_is_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event({**VALID, **change})
    assert field in [e["field"] for e in info.value.errors]
    assert all(e["reason"] and e["code"] for e in info.value.errors)


def test_an_identity_is_required() -> None:
    with pytest.raises(InvalidEvent, match="anonymous_id and customer_id"):
        parse_event({**VALID, "anonymous_id": None, "customer_id": None})


def test_event_ids_are_canonical_uuids() -> None:
    upper = {**VALID, "event_id": "3F2C1E6A8A4B4C1D9D3E2B1A0C9F8E7D"}
    assert parse_event(upper).event_id == "3f2c1e6a-8a4b-4c1d-9d3e-2b1a0c9f8e7d"


def test_malformed_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        parse_event(b"{not json")


def test_a_batch_validated_in_one_call_gives_each_item_what_one_by_one_gives() -> None:
    """Issue 16: one validation call per request; every refusal keeps its reasons."""
    from funnel.events import parse_events

    good = {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "type": "order",
        "site_id": "s",
        "anonymous_id": "a",
        "occurred_at": "2026-10-01T10:00:00Z",
        "order_id": "o1",
        "revenue": "10.5",
        "currency": "EUR",
    }
    items: list[dict[str, Any]] = [
        good,
        {**good, "event_id": "not-a-uuid"},
        {**good, "event_id": "1f8fad5b-d9cb-469f-a165-70867728950e", "type": "nope"},
        {**good, "event_id": "2f8fad5b-d9cb-469f-a165-70867728950e", "anonymous_id": None},
        {**good, "event_id": "3f8fad5b-d9cb-469f-a165-70867728950e", "currency": None},
        {k: v for k, v in good.items() if k != "occurred_at"},
        {**good, "event_id": "4F8FAD5B-D9CB-469F-A165-70867728950E"},
    ]
    expected: list[object] = []
    for item in items:
        try:
            expected.append(parse_event(item))
        except InvalidEvent as exc:
            expected.append(exc.errors)
    got = [e.errors if isinstance(e, InvalidEvent) else e for e in parse_events(items)]
    assert got == expected
    assert sum(isinstance(e, list) for e in got) == 5
    assert parse_events([good, good]) == [parse_event(good)] * 2


@settings(max_examples=300, deadline=None)
@given(
    at=st.datetimes(
        min_value=datetime(1990, 1, 1),  # noqa: DTZ001 (hypothesis draws naive, then a zone)
        max_value=datetime(2110, 1, 1),  # noqa: DTZ001
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
        ),
    ),
    field=st.sampled_from(["occurred_at", "sent_at"]),
)
def test_event_times_are_bounded_by_the_instant_whatever_the_offset(
    at: datetime, field: str
) -> None:
    data = {**VALID, "occurred_at": "2024-05-01T00:00:00Z", field: at.isoformat()}
    if EARLIEST <= at < LATEST:
        assert getattr(parse_event(data), field) == at
        return
    with pytest.raises(InvalidEvent) as refused:
        parse_event(data)
    assert refused.value.errors == [
        {
            "field": field,
            "reason": "must be from 2000-01-01 to before 2100-01-01 (UTC)",
            "code": "time_out_of_range",
        }
    ]
