"""The accounting of the collector's answers: what got a 2xx is stored exactly once.

A fuzzed mix of valid, hostile and edge-case requests (hypothesis strategies below) is sent to
a real collector; :class:`Ledger` keeps, from the answers alone, which events were
acknowledged; :func:`assert_accounted` then checks the store: every acknowledged event is in
``events`` exactly once, nothing else is, and no request got a 5xx.

Used by ``tests/integration/producers/test_accounting.py`` (embedded store, and Kafka → worker
→ sink).
Sizes: ``FUNNEL_ACCOUNTING_REQUESTS`` requests (default :data:`CI_REQUESTS`); the nightly size is
10,000 or more (see the README's testing section).
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from funnel.events import MAX_SEQ
from storage.backends import Store

__all__ = [
    "CI_REQUESTS",
    "SITES",
    "Ledger",
    "Request",
    "assert_accounted",
    "request_count",
    "requests",
]

#: Requests per run in CI (embedded); the Kafka run takes a fifth of the size.
CI_REQUESTS = 1_500
#: Write key → site.
SITES = {"acct-key-shop": "shop", "acct-key-blog": "blog"}
LIMIT = "99999999999999.9999"  # the largest amount an event may carry (Decimal(18, 4))


def request_count(default: int = CI_REQUESTS) -> int:
    return int(os.environ.get("FUNNEL_ACCOUNTING_REQUESTS", default))


@dataclass
class Item:
    """One item of a request, and what validation must make of it."""

    body: Any
    verdict: str  # "valid" (accepted unless the request as a whole is refused),
    # "invalid" (never accepted), "either"

    @property
    def event_id(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        try:
            return str(uuid.UUID(str(self.body.get("event_id"))))
        except ValueError:
            return None


@dataclass
class Request:
    """An HTTP request to the collector; ``items`` are its events as sent."""

    method: str
    path: str
    key: str
    items: list[Item]
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    whole_valid: bool = True
    """False when the request as a whole must be refused (bad JSON, wrong type, …)."""


@dataclass
class Ledger:
    """What the collector's answers say was stored: ``(site, event_id)`` acknowledged."""

    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    requests: int = 0

    def record(self, request: Request, status: int, answer: Any) -> None:
        """Take one answer; raises AssertionError for one that breaks the contract."""
        self.requests += 1
        self.statuses[status] += 1
        assert status < 500, (status, answer, request)
        site = SITES.get(request.key)
        if site is None:
            assert status == 401, (status, answer)
            return
        if not request.whole_valid:
            assert 400 <= status < 500 or (status == 200 and not request.items), (status, answer)
            return
        if status != 200:
            assert status == 400, (status, answer)
            assert all(item.verdict != "valid" for item in request.items), (answer, request)
            return
        if request.path == "/v1/batch":
            refused = {r["index"] for r in answer["rejected"]}
            for r in answer["rejected"]:
                assert r["errors"]
                assert all(e["code"] and e["reason"] for e in r["errors"])
            taken = [i for i in range(len(request.items)) if i not in refused]
            assert answer["accepted"] == len(taken), answer
        else:
            taken = [0]  # /v1/event and the pixel answer 200 only when the event was taken
        for index, item in enumerate(request.items):
            if index in taken:
                assert item.verdict != "invalid", ("accepted an invalid item", item.body)
                event_id = item.event_id
                assert event_id is not None
                self.acknowledged.add((site, event_id))
            else:
                assert item.verdict != "valid", ("refused a valid item", item.body, answer)


def assert_accounted(store: Store, ledger: Ledger) -> None:
    """Every acknowledged event is in ``events`` once; nothing else is; no 5xx."""
    rows = store.query(
        f"SELECT site_id, event_id, count() AS n FROM {store.database}.events "
        "GROUP BY site_id, event_id"
    )
    stored = {(r["site_id"], r["event_id"]): int(r["n"]) for r in rows}
    twice = {k: n for k, n in stored.items() if n != 1}
    lost = ledger.acknowledged - set(stored)
    extra = set(stored) - ledger.acknowledged
    assert not any(status >= 500 for status in ledger.statuses), ledger.statuses
    assert (len(lost), len(twice), len(extra)) == (0, 0, 0), (
        f"lost {sorted(lost)[:5]}, twice {list(twice.items())[:5]}, extra {sorted(extra)[:5]}"
    )


# --- strategies ---------------------------------------------------------------------------

_TYPES = ("impression", "click", "lead", "order", "payment", "repeat")
_PERSONS = st.sampled_from([f"dev-{i}" for i in range(40)])
_CUSTOMERS = st.sampled_from([f"crm-{i}" for i in range(15)])
_TIMES = st.sampled_from(
    [
        "2026-10-01T10:00:00Z",
        "2026-10-02T11:30:15.250+02:00",
        "2000-01-01T00:00:00Z",  # the earliest time an event may carry
        "2011-03-15T08:00:00-05:00",
        "2099-12-31T23:59:59Z",  # far ahead: clamped to the receipt time, kept
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


@st.composite
def valid_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(_TYPES))
    event: dict[str, Any] = {
        "event_id": str(draw(st.uuids())),
        "type": kind,
        "occurred_at": draw(_TIMES),
    }
    who = draw(st.integers(0, 2))
    if who != 1:
        event["anonymous_id"] = draw(_PERSONS)
    if who != 0:
        event["customer_id"] = draw(_CUSTOMERS)
    if draw(st.booleans()):
        event["seq"] = draw(st.sampled_from([0, 1, 7, MAX_SEQ]))
    if draw(st.booleans()):
        event["context"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "utm_source": st.sampled_from(["google", "newsletter", "партнёр"]),
                    "utm_medium": st.sampled_from(["cpc", "email", "referral"]),
                    "gclid": st.text("abc123", min_size=1, max_size=8),
                    "referrer": st.sampled_from(["https://www.google.com/", "https://t.co/x"]),
                    "url": st.sampled_from(["https://shop.example/", "https://shop.example/p?q=1"]),
                },
            )
        )
    if kind in ("order", "payment", "repeat"):
        event["order_id"] = f"o-{draw(st.integers(0, 30))}"
        event["revenue"] = draw(st.sampled_from(["10.50", 99, 0, LIMIT, "0.0001"]))
        event["currency"] = draw(st.sampled_from(["EUR", "USD", "JPY"]))
    if kind == "lead" and draw(st.booleans()):
        event["lead"] = {"form": "demo", "intent": draw(st.sampled_from(["info", "purchase"]))}
    if draw(st.booleans()):
        event["manager_id"] = draw(st.sampled_from(["m-1", "m-2"]))
    event["properties"] = draw(st.dictionaries(st.text(max_size=8), _SCALARS, max_size=4))
    return event


@st.composite
def invalid_event(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event broken in one way the store could not hold, or that breaks the contract."""
    event = draw(valid_event())
    how = draw(st.integers(0, 13))
    if how == 0:
        del event[draw(st.sampled_from(["event_id", "type", "occurred_at"]))]
    elif how == 1:
        event["occurred_at"] = draw(
            st.sampled_from(
                ["0001-01-01T00:00:00Z", "1800-06-01T00:00:00Z", "1999-12-31T23:59:59Z"]
            )
        )
    elif how == 2:
        event["occurred_at"] = "9999-12-31T23:59:59Z"
        event["sent_at"] = "0001-01-01T00:00:00Z"
    elif how == 3:
        event["seq"] = draw(st.sampled_from([MAX_SEQ + 1, 10**30, -1]))
    elif how == 4:
        event.update(order_id="o", revenue="10", currency=draw(st.sampled_from(["ZZZ", "usd"])))
    elif how == 5:
        event.update(order_id="o", revenue=draw(st.sampled_from(["1e20", "-1", "0.00001"])))
        event["currency"] = "EUR"
    elif how == 6:
        event["lead"] = {"form": "demo", "notes": "x" * draw(st.integers(1, 2000))}
    elif how == 7:
        event["properties"] = {"nested": {"not": "scalar"}}
    elif how == 8:
        event["properties"] = {f"p{i}": i for i in range(51)}
    elif how == 9:
        event["event_id"] = draw(st.sampled_from(["not-a-uuid", "", 12]))
    elif how == 10:
        event.pop("anonymous_id", None)
        event.pop("customer_id", None)
    elif how == 11:
        event["type"] = draw(st.sampled_from(["purchase", "", "IMPRESSION"]))
    elif how == 12:
        event["site_id"] = "somebody-else"  # another site than the key's
    else:
        event["unexpected"] = draw(_SCALARS)
    return event


@st.composite
def requests(draw: st.DrawFn) -> list[Request]:
    """A sequence of requests in which later items may repeat earlier ones (retries, the same
    id under another person or site)."""
    sent: list[dict[str, Any]] = []
    out: list[Request] = []
    for _ in range(draw(st.integers(1, 12))):
        key = draw(st.sampled_from([*SITES, "wrong-key"]))
        shape = draw(st.integers(0, 19))
        if shape <= 10:
            out.append(_batch(draw, key, sent))
        elif shape <= 13:
            item = _item(draw, sent)
            body = json.dumps(item.body).encode()
            out.append(Request("POST", "/v1/event", key, [item], body=body))
        elif shape <= 15:
            out.append(_pixel(draw, key))
        elif shape <= 18:
            out.append(_junk(draw, key))
        else:
            out.append(_wide(draw, key, sent))
    return out


def _item(draw: st.DrawFn, sent: list[dict[str, Any]]) -> Item:
    roll = draw(st.integers(0, 9))
    if sent and roll == 0:  # a retry: the same event again
        return Item(dict(draw(st.sampled_from(sent))), "valid")
    if sent and roll == 1:  # the same id under another person: stored once, acknowledged
        again = dict(draw(st.sampled_from(sent)))
        again["anonymous_id"] = draw(_PERSONS)
        return Item(again, "valid")
    if roll <= 3:
        return Item(draw(invalid_event()), "invalid")
    if roll == 4:
        return Item(
            draw(st.none() | st.integers() | st.text(max_size=5) | st.lists(_SCALARS)), "invalid"
        )
    event = draw(valid_event())
    sent.append(event)
    return Item(event, "valid")


def _batch(draw: st.DrawFn, key: str, sent: list[dict[str, Any]]) -> Request:
    items = [_item(draw, sent) for _ in range(draw(st.integers(0, 25)))]
    text = json.dumps([item.body for item in items])
    if draw(st.integers(0, 9)) == 0:  # NaN/Infinity as JSON tokens, in a property
        items.append(Item({}, "invalid"))
        text = text[:-1] + (", " if len(items) > 1 else "") + _nan_item(draw) + "]"
    headers = {
        "Content-Type": draw(
            st.sampled_from(["application/json", "text/plain", "APPLICATION/JSON; charset=utf-8"])
        )
    }
    body = text.encode()
    if draw(st.booleans()):
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body)
    return Request(
        "POST", "/v1/batch", key, items, body=body, headers=headers, whole_valid=bool(items)
    )


def _wide(draw: st.DrawFn, key: str, sent: list[dict[str, Any]]) -> Request:
    """Over a hundred months in one batch: more partitions than one insert may make."""
    months = draw(st.lists(st.integers(0, 12 * 30 - 1), min_size=101, max_size=150, unique=True))
    items = []
    for month in months:
        event = draw(valid_event())
        event["occurred_at"] = f"{2000 + month // 12}-{1 + month % 12:02d}-15T12:00:00Z"
        sent.append(event)
        items.append(Item(event, "valid"))
    body = json.dumps([item.body for item in items]).encode()
    return Request("POST", "/v1/batch", key, items, body=body)


def _nan_item(draw: st.DrawFn) -> str:
    token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    event = {
        "event_id": str(draw(st.uuids())),
        "type": "click",
        "anonymous_id": "dev-nan",
        "occurred_at": "2026-10-01T10:00:00Z",
        "properties": {"x": "TOKEN"},
    }
    return json.dumps(event).replace('"TOKEN"', token)


def _pixel(draw: st.DrawFn, key: str) -> Request:
    event_id = str(draw(st.uuids()))
    params = {"key": key, "eid": event_id, "aid": draw(_PERSONS), "type": "impression"}
    verdict = "valid"
    if draw(st.integers(0, 3)) == 0:
        params["ts"] = draw(st.sampled_from(["1800-01-01T00:00:00Z", "soon", "0"]))
        verdict = "invalid"
    item = Item({"event_id": event_id}, verdict)
    return Request("GET", "/v1/p.gif", key, [item], params=params)


def _junk(draw: st.DrawFn, key: str) -> Request:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        body = b"[" * 100_000 + b"]" * 100_000
    elif kind == 1:
        body = draw(st.binary(max_size=200)) + b"\xff"
    elif kind == 2:
        body = json.dumps({"not": "a list"}).encode()
    elif kind == 3:
        body = gzip.compress(b"[]")[:-4]  # truncated gzip
        return Request(
            "POST",
            "/v1/batch",
            key,
            [],
            body=body,
            headers={"Content-Encoding": "gzip"},
            whole_valid=False,
        )
    else:
        return Request(
            "POST",
            "/v1/batch",
            key,
            [],
            body=b"[]",
            headers={"Content-Type": "application/xml"},
            whole_valid=False,
        )
    return Request("POST", "/v1/batch", key, [], body=body, whole_valid=False)
