"""The embedded store's Arrow insert path lands exactly what the JSONEachRow path lands."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

from storage.arrow_rows import arrow_block
from storage.backends import ChdbStore, encode_rows
from storage.migrate import migrate
from tests.fact_traffic import fact_stream


def via_json(store: ChdbStore, table: str, rows: list[dict[str, object]]) -> None:
    store.execute(
        f"INSERT INTO {store.database}.{table} "
        f"SETTINGS date_time_input_format = 'best_effort' FORMAT JSONEachRow\n{encode_rows(rows)}"
    )


def content(store: ChdbStore, table: str) -> list[dict[str, object]]:
    return store.query(f"SELECT * EXCEPT landed_at FROM {store.database}.{table} ORDER BY ALL")


def test_decoded_facts_land_the_same_through_arrow_and_json(chdb_engine: ChdbStore) -> None:
    arrow, text = (chdb_engine.using(f"a_{uuid.uuid4().hex[:10]}") for _ in range(2))
    migrate(arrow)
    migrate(text)
    by_table: dict[str, list[dict[str, object]]] = defaultdict(list)
    for record in fact_stream(300, seed=5):
        by_table[record.table].append(record.row)
    columns = {
        t: {r["name"]: r["type"] for r in arrow.query(f"DESCRIBE {arrow.database}.{t}")}
        for t in by_table
    }
    for table, rows in by_table.items():
        assert arrow_block(rows, columns[table]) is not None, table  # the fast path is taken
        arrow.insert(table, rows, dedup_token=f"{table}:0:0:{len(rows)}")
        via_json(text, table, rows)
    for table in by_table:
        assert content(arrow, table) == content(text, table), table


def test_python_values_and_defaults_match_json(store: ChdbStore) -> None:
    at = datetime(2026, 10, 1, 12, 30, 0, 123_456, tzinfo=UTC)
    base = {
        "conversion_id": "c", "site_id": "s", "person_id": "p", "conversion_type": "order",
        "converted_at": at, "model": "linear", "channel": "Email", "campaign": "",
        "credit": 0.5, "revenue_credit": Decimal("12.5"), "fact_id": None,
    }  # fmt: skip
    rows = [base, {**base, "person_id": "q", "credit": 1, "revenue_credit": "3.1416"}]
    other = store.using(f"{store.database}_json")
    migrate(other)
    store.insert("attributions", rows)
    via_json(other, "attributions", rows)
    assert content(store, "attributions") == content(other, "attributions")
    spend = [{"date": date(2026, 10, 1), "site_id": "s", "channel": "Email", "campaign": "x",
              "cost": Decimal("1.25"), "currency": "EUR"}]  # fmt: skip
    store.insert("spend", spend)
    via_json(other, "spend", spend)
    assert store.query(f"SELECT * FROM {store.database}.spend") == other.query(
        f"SELECT * FROM {other.database}.spend"
    )


def test_rows_the_fast_path_cannot_map_exactly_take_the_json_path(store: ChdbStore) -> None:
    columns = {"a": "String", "d": "DateTime64(3, 'UTC')", "x": "Decimal(18, 4)"}
    assert arrow_block([{"a": "x"}, {"a": "y", "d": None}], columns) is None  # mixed keys
    assert arrow_block([{"d": "2026-10-01 10:00:00"}], columns) is None  # no offset
    assert arrow_block([{"x": "1.23456"}], columns) is None  # more digits than the scale
    assert arrow_block([{"a": 1}], columns) is None  # a number into a String
    assert arrow_block([{"a": "x", "d": "2026-10-01T10:00:00Z", "x": "1.5"}], columns)
