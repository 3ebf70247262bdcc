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
from storage.poison import insert_isolating

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


# Engine-side refusals (issue 11): a write the engine refuses raises, on every path, and
# refuses nothing else; insert_isolating lands the rest and names the poison.


def test_too_many_partitions_in_one_block_raises_and_lands_nothing(any_store: Store) -> None:
    rows = []
    for month in range(101):  # stage_reached is partitioned by month: 101 partitions
        row = stage_row(f"p{month}")
        row["reached_at"] = datetime(2010 + month // 12, 1 + month % 12, 1, tzinfo=UTC)
        rows.append(row)
    with pytest.raises(StoreError) as refused:
        any_store.insert("stage_reached", rows)
    assert refused.value.refuses_data
    [count] = any_store.query(f"SELECT count() AS n FROM {any_store.database}.stage_reached")
    assert count["n"] == 0
    assert insert_isolating(any_store, "stage_reached", rows, dedup_token="t:0:0:100") == []
    [count] = any_store.query(f"SELECT count() AS n FROM {any_store.database}.stage_reached")
    assert count["n"] == 101


def test_a_value_out_of_range_raises_on_the_text_path(any_store: Store) -> None:
    row = stage_row("p1")
    row["campaign"] = {"not": "text"}  # no Arrow mapping: the JSONEachRow path
    row["step_index"] = "seven"
    with pytest.raises(StoreError) as refused:
        any_store.insert("stage_reached", [row])
    assert refused.value.refuses_data


def test_a_constraint_raises_and_the_poison_is_isolated(any_store: Store) -> None:
    any_store.execute(
        f"ALTER TABLE {any_store.database}.stage_reached "
        "ADD CONSTRAINT no_poison CHECK person_id != 'poison'"
    )
    rows = [stage_row(f"p{i}") for i in range(9)]
    rows.insert(6, stage_row("poison"))
    with pytest.raises(StoreError) as refused:
        any_store.insert("stage_reached", rows)
    assert refused.value.refuses_data
    token = "facts.stage:0:10:19"
    for _ in range(2):  # a replay of the same batch lands nothing twice
        [poison] = insert_isolating(any_store, "stage_reached", rows, dedup_token=token)
        assert poison.row["person_id"] == "poison"
        assert "no_poison" in poison.reason
    landed = any_store.query(
        f"SELECT person_id FROM {any_store.database}.stage_reached ORDER BY person_id"
    )
    assert [r["person_id"] for r in landed] == [f"p{i}" for i in range(9)]
    dead = poison.dead_letter(datetime(2026, 10, 1, tzinfo=UTC))
    assert dead["site_id"] == "s"
    assert "store_refused" in str(dead["reason"])


def test_a_broken_store_is_not_poison(any_store: Store) -> None:
    with pytest.raises(StoreError) as failed:
        insert_isolating(any_store, "no_such_table", [stage_row("p1"), stage_row("p2")])
    assert not failed.value.refuses_data


def test_the_report_view_runs_its_queries_on_one_thread(store: ChdbStore) -> None:
    """``funnel serve`` answers reports through ``limited(1)`` (issue 19: ingestion keeps the
    other cores); the store itself is not limited."""
    [one] = store.limited(1).query("SELECT getSetting('max_threads') AS n")
    [two] = store.limited(2).query("SELECT getSetting('max_threads') AS n")
    assert (int(one["n"]), int(two["n"])) == (1, 2)
    assert store.limited(1).database == store.database
