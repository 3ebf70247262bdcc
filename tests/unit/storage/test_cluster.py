"""Cluster mode DDL (storage/cluster.py), checked by ClickHouse's own parser and against the
single-server schema the same migrations build in the real engine (chDB).

Every statement is normalised by ``formatQuerySingleLine`` (which raises on a syntax error)
and the properties are read from ClickHouse's formatting, not from the rewriter's own text.
The expected schema comes from ``system.tables``/``system.columns`` of a database migrated in
single-server mode, so a new migration (``migrations()`` is iterated) is covered as it lands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from storage.backends import ChdbStore, StoreError
from storage.cluster import cluster_statements, sharding_key
from storage.migrate import migrate, migrations

CLUSTER = "funnel_cluster"
DB = "funnel"
ON_CLUSTER = re.compile(rf" ON CLUSTER {CLUSTER}\b")
_REPLICATED = re.compile(
    r"^CREATE TABLE IF NOT EXISTS funnel\.(\w+)_local ON CLUSTER \w+ .* ENGINE = Replicated(\w+)"
    r"\('/clickhouse/tables/\{shard\}/funnel/(\w+)', '\{replica\}'"
)
_DISTRIBUTED = re.compile(
    r"^CREATE TABLE IF NOT EXISTS funnel\.(\w+) ON CLUSTER \w+ AS funnel\.(\w+) "
    r"ENGINE = Distributed\('(\w+)', 'funnel', '(\w+)', (.+)\)$"
)
_ALTER = re.compile(r"^ALTER TABLE funnel\.(\w+) ON CLUSTER \w+ (.*)$")
_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS funnel\.(\w+) ON CLUSTER \w+ TO (\S+)")


def _escaped(value: str) -> str:
    # Query parameter values are read in TSV-escaped form.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def formatted(engine: ChdbStore, sql: str) -> str:
    """ClickHouse's single-line formatting of ``sql``; raises StoreError on a syntax error."""
    rows = engine.query("SELECT formatQuerySingleLine({sql:String}) AS q", {"sql": _escaped(sql)})
    return str(rows[0]["q"])


@dataclass
class Expected:
    """The single-server schema as the engine reports it."""

    tables: dict[str, str]  # name -> engine, MergeTree family only
    columns: dict[str, set[str]]
    sorting_keys: dict[str, str]
    views: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def expected(chdb_engine: ChdbStore) -> Expected:
    db = chdb_engine.using(f"single_{CLUSTER}")
    migrate(db)
    rows = db.query(
        "SELECT name, engine, sorting_key FROM system.tables WHERE database = {db:String}",
        {"db": db.database},
    )
    tables = {r["name"]: r["engine"] for r in rows if str(r["engine"]).endswith("MergeTree")}
    columns: dict[str, set[str]] = {name: set() for name in tables}
    for r in db.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String}", {"db": db.database}
    ):
        if r["table"] in columns:
            columns[r["table"]].add(r["name"])
    views = {r["name"] for r in rows if r["engine"] == "MaterializedView"}
    sorting = {r["name"]: str(r["sorting_key"]) for r in rows}
    return Expected(tables, columns, sorting, views)


def bootstrap_and_migrations() -> list[tuple[str, list[str]]]:
    """(label, single-server statements): migrate()'s own statements first, then each file."""
    log = StatementLog()
    migrate(log)
    bootstrap = log.executed[:2]
    return [("bootstrap", bootstrap)] + [
        (f"{m.version:04d}_{m.name}", m.statements(DB)) for m in migrations()
    ]


class StatementLog:
    """A Store that records the statements :func:`migrate` sends and has no rows: it shows
    what ``migrate`` emits; ClickHouse itself parses what it recorded."""

    database = DB

    def __init__(self) -> None:
        self.executed: list[str] = []
        self.inserted: list[str] = []

    def execute(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        self.executed.append(sql)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
        return []

    def insert(self, table: str, rows: Sequence[Mapping[str, object]], **_: object) -> None:
        self.inserted.append(table)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def cluster_schema(chdb_engine: ChdbStore) -> list[str]:
    """Every cluster statement of migrate()'s bootstrap and of every migration, formatted."""
    out = []
    for _, statements in bootstrap_and_migrations():
        out += [formatted(chdb_engine, s) for s in cluster_statements(statements, DB, CLUSTER)]
    return out


def problems(schema: Sequence[str], expected: Expected) -> list[str]:
    """What is wrong with a formatted cluster ``schema`` given the single-server one."""
    found: list[str] = []
    local_cols: dict[str, set[str]] = {}
    dist_cols: dict[str, set[str]] = {}
    for sql in schema:
        if not ON_CLUSTER.search(sql):
            found.append(f"no ON CLUSTER: {sql[:90]}")
        if match := _REPLICATED.match(sql):
            table, engine, path_table = match.groups()
            if table != path_table:
                found.append(f"{table}_local replicates under {path_table}'s Keeper path")
            if table in expected.tables and engine != expected.tables[table]:
                found.append(f"{table}_local is Replicated{engine}, not {expected.tables[table]}")
            local_cols[table] = set(re.findall(r"[(,] `(\w+)` ", sql.split(" ENGINE = ")[0]))
            local_cols[table] |= set(re.findall(r"\(`(\w+)` ", sql.split(" ENGINE = ")[0]))
        elif sql.startswith("CREATE TABLE") and "_local " in sql.split(" AS ")[0]:
            found.append(f"local table not Replicated: {sql[:90]}")
        elif match := _DISTRIBUTED.match(sql):
            table, source, cluster, target, key = match.groups()
            if not (source == target == f"{table}_local") or cluster != CLUSTER:
                found.append(f"{table} is not Distributed over {table}_local on {CLUSTER}")
            columns = expected.columns.get(table, set())
            owner = next((c for c in ("person_id", "site_id") if c in columns), None)
            if (owner and key != f"cityHash64({owner})") or "rand" in key:
                found.append(f"{table} sharded by {key}, not by {owner or 'its sorting key'}")
            engine = expected.tables.get(table, "")
            sorting = set(re.findall(r"\w+", expected.sorting_keys.get(table, "")))
            if engine.startswith(("Replacing", "Collapsing", "VersionedCollapsing")) and not (
                set(re.findall(r"\w+", key)) - {"cityHash64"} <= sorting
            ):
                found.append(f"{table}: {engine} rows with one key may land on two shards")
            dist_cols[table] = set(local_cols.get(table, set()))
        elif match := _ALTER.match(sql):
            table, rest = match.groups()
            target = local_cols if table.endswith("_local") else dist_cols
            name = table.removesuffix("_local")
            target.setdefault(name, set()).update(
                re.findall(r"ADD COLUMN (?:IF NOT EXISTS )?`(\w+)`", rest)
            )
            target[name] -= set(re.findall(r"DROP COLUMN (?:IF EXISTS )?`(\w+)`", rest))
        elif match := _MV.match(sql):
            view, target = match.groups()
            reads = re.findall(r"\b(?:FROM|JOIN) (\S+)", sql.split(" AS SELECT ", 1)[-1])
            if not target.endswith("_local") or not all(t.endswith("_local") for t in reads):
                found.append(f"{view} does not read and write local tables: {sql[:120]}")
    for table, columns in expected.columns.items():
        for kind, cols in (("local", local_cols), ("Distributed", dist_cols)):
            if cols.get(table) != columns:
                found.append(f"{kind} {table} has columns {cols.get(table)}, not {columns}")
    for view in expected.views:
        if not any(_MV.match(sql) and f"funnel.{view} " in sql for sql in schema):
            found.append(f"materialized view {view} missing")
    return found


@pytest.mark.parametrize(
    ("label", "statements"),
    bootstrap_and_migrations(),
    ids=[label for label, _ in bootstrap_and_migrations()],
)
def test_every_cluster_statement_parses(
    chdb_engine: ChdbStore, label: str, statements: list[str]
) -> None:
    translated = cluster_statements(statements, DB, CLUSTER)
    assert len(translated) >= len(statements), label
    for sql in translated:
        assert ON_CLUSTER.search(formatted(chdb_engine, sql)), sql


def test_cluster_schema_matches_the_single_server_schema(
    cluster_schema: list[str], expected: Expected
) -> None:
    assert {"events", "stage_reached", "persons", "schema_migrations"} <= set(expected.tables)
    assert problems(cluster_schema, expected) == []


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("cityHash64(person_id))", "rand())", "sharded by rand()"),
        ("cityHash64(person_id))", "cityHash64(site_id))", "not by person_id"),
        ("cityHash64(version)", "cityHash64(applied_at)", "may land on two shards"),
        ("ReplicatedMergeTree(", "MergeTree(", "not Replicated"),
        ("FROM funnel.stage_reached_local", "FROM funnel.stage_reached", "does not read"),
        ("ON CLUSTER funnel_cluster (ADD", "(ADD", "no ON CLUSTER"),
    ],
)
def test_the_checks_catch_a_broken_schema(
    cluster_schema: list[str], expected: Expected, old: str, new: str, complaint: str
) -> None:
    broken = [sql.replace(old, new) for sql in cluster_schema]
    assert broken != cluster_schema, f"{old!r} not in the schema: the check tests nothing"
    assert any(complaint in p for p in problems(broken, expected))


def test_the_parser_catches_a_broken_statement(chdb_engine: ChdbStore) -> None:
    sql = cluster_statements(migrations()[0].statements(DB), DB, CLUSTER)[0]
    # ON CLUSTER after the column list is a statement ClickHouse does not accept.
    broken = sql.replace(f" ON CLUSTER {CLUSTER}", "").replace(
        "\nENGINE", f" ON CLUSTER {CLUSTER}\nENGINE"
    )
    with pytest.raises(StoreError, match="Syntax error"):
        formatted(chdb_engine, broken)


def test_migrate_sends_only_cluster_statements() -> None:
    log = StatementLog()
    applied = migrate(log, cluster=CLUSTER)
    assert [m.version for m in applied] == [m.version for m in migrations()]
    assert all(ON_CLUSTER.search(sql) for sql in log.executed)
    assert any("schema_migrations_local" in sql and "Replicated" in sql for sql in log.executed)
    assert set(log.inserted) == {"schema_migrations"}  # through its Distributed table


def test_alter_of_column_and_other_clauses() -> None:
    both = cluster_statements(["ALTER TABLE funnel.events DROP COLUMN x"], DB, "c")
    assert both == [
        "ALTER TABLE funnel.events_local ON CLUSTER c DROP COLUMN x",
        "ALTER TABLE funnel.events ON CLUSTER c DROP COLUMN x",
    ]
    ttl = cluster_statements(["ALTER TABLE funnel.events MODIFY TTL toDate(occurred_at)"], DB, "c")
    assert ttl == ["ALTER TABLE funnel.events_local ON CLUSTER c MODIFY TTL toDate(occurred_at)"]
    with pytest.raises(ValueError, match="split"):
        cluster_statements(["ALTER TABLE funnel.events ADD COLUMN y UInt8, MODIFY TTL d"], DB, "c")


def test_sharding_override_and_fallback() -> None:
    spend = (
        "CREATE TABLE funnel.spend (site_id String) ENGINE = ReplacingMergeTree ORDER BY site_id"
    )
    assert cluster_statements([spend], DB, "c", sharding={"spend": "rand()"})[1].endswith(
        "'spend_local', rand())"
    )
    assert sharding_key(["version"], "version") == "cityHash64(version)"
    assert sharding_key(["a", "b"], "(a, b)") == "cityHash64(a, b)"
    assert sharding_key(["a"], "tuple()") == "rand()"


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE funnel.events",
        "INSERT INTO funnel.spend VALUES (1)",
        "CREATE TABLE funnel.buf (a UInt8) ENGINE = Memory",
        "CREATE TABLE other.t (a UInt8) ENGINE = MergeTree ORDER BY a",
        "CREATE MATERIALIZED VIEW funnel.mv ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a",
        "CREATE MATERIALIZED VIEW funnel.mv TO funnel.t AS SELECT 1 AS a FROM numbers(1)",
        "ALTER TABLE funnel.mv MODIFY QUERY SELECT 1",
    ],
)
def test_unknown_statement_shapes_are_refused(sql: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        cluster_statements([sql], DB, "c")


@pytest.mark.parametrize("name", ["my-cluster", "", "c; DROP TABLE x"])
def test_cluster_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        cluster_statements([], DB, name)
