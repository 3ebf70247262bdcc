"""One contract, every store backend (STYLE principle 5).

The embedded engine (chDB) always runs these; a ClickHouse server runs them too when
``FUNNEL_TEST_CLICKHOUSE`` names one (``clickhouse://user:pass@host:9000``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from storage.backends import ChdbStore, ServerStore, Store, StoreError
from storage.migrate import migrate, migrations

BACKENDS = ["chdb"] + (["server"] if os.environ.get("FUNNEL_TEST_CLICKHOUSE") else [])


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, chdb_engine: ChdbStore) -> Iterator[Store]:
    database = f"c_{uuid.uuid4().hex[:12]}"
    backend: Store
    if request.param == "chdb":
        backend = chdb_engine.using(database)
    else:
        backend = ServerStore(os.environ["FUNNEL_TEST_CLICKHOUSE"], database)
    migrate(backend)
    yield backend
    backend.execute(f"DROP DATABASE IF EXISTS {database}")


def stage_row(person: str) -> dict[str, object]:
    at = datetime(2026, 10, 1, 12, 30, 0, 123_000, tzinfo=UTC)
    return {
        "site_id": "s",
        "person_id": person,
        "funnel": "sales",
        "step": "click",
        "step_index": 2,
        "reached_at": at,
        "entered_at": at.isoformat(),
        "channel": "Email",
        "campaign": "",
    }


def test_migrations_are_idempotent_and_recorded(any_store: Store) -> None:
    assert migrate(any_store) == []
    recorded = any_store.query(f"SELECT version FROM {any_store.database}.schema_migrations")
    assert sorted(int(r["version"]) for r in recorded) == [m.version for m in migrations()]


def test_rows_round_trip_typed(any_store: Store) -> None:
    any_store.insert("stage_reached", [stage_row("p1")])
    [row] = any_store.query(
        f"SELECT person_id, step_index, toString(reached_at) AS at "
        f"FROM {any_store.database}.stage_reached"
    )
    assert row == {"person_id": "p1", "step_index": 2, "at": "2026-10-01 12:30:00.123"}


def test_same_token_lands_once_and_no_token_never_dedups(any_store: Store) -> None:
    rows = [stage_row("p1"), stage_row("p2")]
    any_store.insert("stage_reached", rows, dedup_token="t:0:0:1")
    any_store.insert("stage_reached", rows, dedup_token="t:0:0:1")  # a replay
    any_store.insert("stage_reached", rows)
    any_store.insert("stage_reached", rows)  # identical on purpose: both land
    [count] = any_store.query(f"SELECT count() AS n FROM {any_store.database}.stage_reached")
    assert count["n"] == 6


def test_decimals_and_maps(any_store: Store) -> None:
    at = datetime(2026, 10, 1, tzinfo=UTC)
    any_store.insert(
        "events",
        [
            {
                "event_id": "e1",
                "site_id": "s",
                "event_type": "order",
                "occurred_at": at,
                "received_at": at,
                "anonymous_id": "a",
                "customer_id": "",
                "person_id": "a",
                "seq": None,
                "channel": "Direct",
                "source": "",
                "medium": "",
                "campaign": "",
                "term": "",
                "content": "",
                "referrer_host": "",
                "url": "",
                "order_id": "o1",
                "revenue": Decimal("12.3456"),
                "currency": "USD",
                "manager_id": "",
                "lead_intent": "",
                "properties": {"coupon": "X"},
            }
        ],
    )
    [row] = any_store.query(
        f"SELECT toString(revenue) AS r, properties['coupon'] AS c, seq "
        f"FROM {any_store.database}.events"
    )
    assert row == {"r": "12.3456", "c": "X", "seq": None}


def test_params_are_bound_not_spliced(any_store: Store) -> None:
    any_store.insert("stage_reached", [stage_row("o'brien")])
    rows = any_store.query(
        f"SELECT count() AS n FROM {any_store.database}.stage_reached "
        "WHERE person_id = {p:String}",
        {"p": "o'brien"},
    )
    assert rows == [{"n": 1}]


def test_bad_sql_is_a_store_error(any_store: Store) -> None:
    with pytest.raises(StoreError, match="nosuch"):
        any_store.query(f"SELECT nosuch FROM {any_store.database}.events")
