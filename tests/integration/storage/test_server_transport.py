"""The server backend's transport against a real ``clickhouse-server`` process.

Why 18.16: it is the only ClickHouse server installable here (Debian 12's ``clickhouse-server``
package); ``scripts/system-deps`` installs it and the ``clickhouse_server`` fixture starts a private
one, so these tests always run. The project's schema needs a current server (DateTime64, Map,
LowCardinality, deduplication tokens), so the store contract suite runs against a server only
when ``FUNNEL_TEST_CLICKHOUSE`` names one; here a tiny schema 18.16 understands (MergeTree with
Date, String, UInt64, Float64, Nullable, DateTime) exercises what does not depend on the schema:

* connecting, and reading the server's version for feature detection;
* typed columnar inserts: JSON-shaped values are converted to the reported column types and
  come back as those types, missing values as the column's zero or ``NULL``;
* ``{name:Type}`` parameters, bound by the server or, on servers without them, spliced as
  escaped literals (a quote in a value stays data);
* error mapping: bad SQL, unknown tables and values that do not fit are :class:`StoreError`,
  never :class:`StoreUnavailable`; a stopped server is :class:`StoreUnavailable`;
* reconnecting: after a server restart (idle connection, or calls failing while it was down)
  the same :class:`ServerStore` works again and the data is still there.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from storage.backends import ServerStore, StoreError, StoreUnavailable
from tests.clickhouse_server import ClickHouseServer

TABLE = "visits"
DAY0 = date(2026, 10, 1)
AT0 = datetime(2026, 10, 1, 8, 0, 0, tzinfo=UTC)


@pytest.fixture
def server_store(clickhouse_server: ClickHouseServer) -> Iterator[ServerStore]:
    """A store on a fresh database of the session's server, holding the empty ``visits``."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    store = ServerStore(clickhouse_server.url, database)
    store.execute(f"CREATE DATABASE {database}")
    store.execute(
        f"CREATE TABLE {database}.{TABLE} (day Date, site String, seq UInt64, amount Float64, "
        "note Nullable(String), at DateTime) "
        "ENGINE = MergeTree() PARTITION BY toYYYYMM(day) ORDER BY (site, seq)"
    )
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {database}")
    store.close()


def visit(seq: int) -> dict[str, object]:
    """A JSON-shaped row; its values vary in shape (strings, numbers, datetimes, gaps)."""
    row: dict[str, object] = {
        "day": (DAY0 + timedelta(days=seq % 40)).isoformat(),
        "site": f"site-{seq % 7}",
        "seq": seq if seq % 3 else str(seq),  # numbers may arrive as JSON strings
        "amount": seq * 0.25,
        "at": (AT0 + timedelta(seconds=seq)).isoformat()
        if seq % 2
        else AT0 + timedelta(seconds=seq),
    }
    if seq % 5:
        row["note"] = None if seq % 5 == 1 else f"n'{seq}"
    if seq % 11 == 0:
        del row["amount"]  # absent in some rows: the column's zero
    return row


def expected(seq: int) -> tuple[object, ...]:
    note = None if seq % 5 in (0, 1) else f"n'{seq}"
    amount = 0.0 if seq % 11 == 0 else seq * 0.25
    at = (AT0 + timedelta(seconds=seq)).replace(tzinfo=None)  # the server's zone is UTC
    return (DAY0 + timedelta(days=seq % 40), f"site-{seq % 7}", seq, amount, note, at)


def count(store: ServerStore) -> int:
    [row] = store.query(f"SELECT count() AS n FROM {store.database}.{TABLE}")
    return int(row["n"])


def test_connects_and_reads_the_server_version(server_store: ServerStore) -> None:
    [row] = server_store.query("SELECT version() AS v")
    reported = tuple(int(part) for part in str(row["v"]).split(".")[:3])
    assert server_store.server_version == reported


def test_typed_columnar_insert_round_trip(server_store: ServerStore) -> None:
    n = 3000
    server_store.insert(TABLE, [visit(seq) for seq in range(n)])

    rows = server_store.query(
        f"SELECT day, site, seq, amount, note, at FROM {server_store.database}.{TABLE} ORDER BY seq"
    )
    assert [tuple(r.values()) for r in rows] == [expected(seq) for seq in range(n)]
    [types] = server_store.query(
        f"SELECT toTypeName(day) AS d, toTypeName(seq) AS s, toTypeName(amount) AS a, "
        f"toTypeName(note) AS n, toTypeName(at) AS t FROM {server_store.database}.{TABLE} LIMIT 1"
    )
    assert types == {
        "d": "Date",
        "s": "UInt64",
        "a": "Float64",
        "n": "Nullable(String)",
        "t": "DateTime",
    }
    assert {type(v) for r in rows for v in r.values() if v is not None} == {
        date,
        str,
        int,
        float,
        datetime,
    }


def test_params_are_bound_not_spliced(server_store: ServerStore) -> None:
    # has(), not IN: 18.16 takes no array on the right of IN (a tuple or a subquery only).
    server_store.insert(TABLE, [{**visit(1), "site": "o'brien"}, visit(2)])
    rows = server_store.query(
        f"SELECT seq FROM {server_store.database}.{TABLE} "
        "WHERE site = {site:String} AND at >= {since:DateTime} AND has({seqs:Array(UInt64)}, seq)",
        {"site": "o'brien", "since": AT0, "seqs": [1, 5]},
    )
    assert rows == [{"seq": 1}]


def test_replays_without_a_token_land_twice_and_a_token_is_honoured_where_supported(
    server_store: ServerStore, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [visit(1), visit(2)]
    server_store.insert(TABLE, rows)
    server_store.insert(TABLE, rows)  # identical on purpose: both land on every version
    assert count(server_store) == 4

    with caplog.at_level(logging.WARNING, logger="storage.backends"):
        server_store.insert(TABLE, rows, dedup_token="t:0:0:1")
        server_store.insert(TABLE, rows, dedup_token="t:0:0:1")  # a replay
    version = server_store.server_version
    assert version is not None
    if version[:2] >= ServerStore.DEDUP_TOKEN_VERSION:
        assert count(server_store) == 6
    else:  # 18.16: no tokens, the degraded transport inserts and says so once
        assert count(server_store) == 8
        assert [r.message for r in caplog.records].count(
            f"ClickHouse {version[0]}.{version[1]} has no insert_deduplication_token: "
            "replayed inserts land twice"
        ) == 1


def test_bad_sql_and_schema_errors_are_store_errors_not_unavailable(
    server_store: ServerStore,
) -> None:
    cases: list[Callable[[], object]] = [
        lambda: server_store.query(f"SELECT nosuch FROM {server_store.database}.{TABLE}"),
        lambda: server_store.execute("SELEC 1"),
        lambda: server_store.insert("no_such_table", [visit(1)]),
        lambda: server_store.insert(TABLE, [{**visit(1), "seq": "not a number"}]),
        lambda: server_store.insert(TABLE, [{**visit(1), "seq": -1}]),  # UInt64
    ]
    for case in cases:
        with pytest.raises(StoreError) as caught:
            case()
        assert not isinstance(caught.value, StoreUnavailable), caught.value
    server_store.insert(TABLE, [visit(1)])  # the store still works after each of them
    assert count(server_store) == 1


def test_stopped_server_is_unavailable_and_the_same_store_reconnects(
    server_store: ServerStore, clickhouse_server: ClickHouseServer
) -> None:
    server_store.insert(TABLE, [visit(seq) for seq in range(100)])
    clickhouse_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            server_store.query("SELECT 1 AS one")
        with pytest.raises(StoreUnavailable):  # the next call tries again, and fails again
            server_store.insert(TABLE, [visit(100)])
    finally:
        clickhouse_server.start()

    server_store.insert(TABLE, [visit(seq) for seq in range(100, 150)])
    assert count(server_store) == 150


def test_restart_while_idle_is_transparent(
    server_store: ServerStore, clickhouse_server: ClickHouseServer
) -> None:
    server_store.insert(TABLE, [visit(seq) for seq in range(10)])
    clickhouse_server.restart()  # the store's connection is now dead, unbeknown to it
    assert count(server_store) == 10
    server_store.insert(TABLE, [visit(10)])
    assert count(server_store) == 11
