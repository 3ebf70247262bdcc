"""Cluster mode: the single-server migration statements rewritten for a ClickHouse cluster.

:func:`cluster_statements` is a pure function (no I/O) from the statements of one migration
(:meth:`storage.migrate.Migration.statements`) to the statements that build the same schema on
a cluster named in the server's ``remote_servers`` configuration:

* every ``CREATE DATABASE`` / ``CREATE TABLE`` / ``ALTER TABLE`` / ``CREATE [MATERIALIZED] VIEW``
  runs ``ON CLUSTER <cluster>``;
* a ``CREATE TABLE db.t … ENGINE = XMergeTree(args)`` becomes the shard-local table
  ``db.t_local`` with ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/db/t', '{replica}',
  args)`` (columns, PARTITION BY, ORDER BY, TTL and SETTINGS kept) plus ``db.t`` itself as
  ``Distributed(cluster, db, t_local, <sharding key>)``, so readers and writers keep using the
  contract names of DESIGN §9;
* the sharding key is ``cityHash64(person_id)`` when the table has a ``person_id`` column: a
  person's rows then live on one shard, which ``windowFunnel`` (it sees one shard's rows per
  person) and ``ReplacingMergeTree`` (it collapses rows of one shard only) need. Otherwise it is
  ``cityHash64(site_id)``: deterministic, so a replayed insert is split across the shards
  exactly as the first one was and each shard recognises its part by the
  ``insert_deduplication_token`` (``rand()`` would split a replay differently, so the token
  would drop rows the first attempt never sent there and land others twice), and it keeps
  rows a Replacing/Summing engine collapses (same sorting key, which starts with ``site_id``)
  on one shard. A table with neither column is sharded by a hash of its sorting key, for
  the same two reasons (``schema_migrations``: ``cityHash64(version)``); ``sharding``
  overrides any of these per table;
* ``ALTER TABLE db.t`` applies to ``db.t_local`` and, when every clause is a column change
  (ADD/DROP/MODIFY/RENAME/COMMENT COLUMN), to the Distributed ``db.t`` too, local first so
  the Distributed table never names a column the shards lack; other ALTERs (TTL, settings,
  indexes, mutations) apply to the local tables only;
* ``CREATE MATERIALIZED VIEW db.mv TO db.target AS SELECT … FROM db.src …`` reads the local
  ``db.src_local`` and writes the local ``db.target_local``: an insert through the Distributed
  table lands on one shard's ``src_local`` and fires the view there; the target's own
  Distributed table (from its ``CREATE TABLE``) serves the reads.

Anything else (DROP, INSERT, views with an inner engine, non-MergeTree engines, backquoted
names) raises :class:`ValueError`: a statement this module does not know is refused rather
than guessed at. The rewriting is deliberately a handful of anchored patterns over the
statement shapes the migrations use, not a SQL parser; the tests check every result with
ClickHouse's own parser (``formatQuery``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["CLUSTER_ENV", "LOCAL_SUFFIX", "cluster_statements", "sharding_key"]

CLUSTER_ENV: Final = "FUNNEL_CLUSTER"
"""The environment variable the CLI reads the cluster name from (``funnel migrate --cluster``)."""

LOCAL_SUFFIX: Final = "_local"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CREATE_DATABASE = re.compile(r"CREATE\s+DATABASE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\Z", re.I)
_CREATE_TABLE = re.compile(
    r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<db>\w+)\.(?P<table>\w+)\s*(?P<rest>\(.*)\Z",
    re.I | re.S,
)
_ENGINE = re.compile(r"\s*ENGINE\s*=\s*(?P<engine>\w+)\s*(?P<rest>.*)\Z", re.I | re.S)
_ALTER_TABLE = re.compile(
    r"ALTER\s+TABLE\s+(?P<db>\w+)\.(?P<table>\w+)\s+(?P<rest>.*)\Z", re.I | re.S
)
_COLUMN_CLAUSE = re.compile(r"(?:ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.I)
_CREATE_MV = re.compile(
    r"CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<db>\w+)\.(?P<view>\w+)\s+"
    r"TO\s+(?P<tdb>\w+)\.(?P<target>\w+)\s*(?P<rest>.*)\Z",
    re.I | re.S,
)
_CREATE_VIEW = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+\.\w+)\s+"
    r"(?P<rest>AS\s.*)\Z",
    re.I | re.S,
)
_ORDER_BY = re.compile(
    r"\bORDER\s+BY\s+(.+?)(?=\s+(?:PRIMARY\s+KEY|SAMPLE\s+BY|TTL|SETTINGS|COMMENT)\b|\s*\Z)",
    re.I | re.S,
)
_NOT_A_COLUMN = {"INDEX", "PROJECTION", "CONSTRAINT", "PRIMARY"}
# The settings key of the single-server dedup window and its replicated counterpart; the
# seconds bound (1 hour by default in recent releases) would otherwise forget a token long
# before the 10 000-insert window is used up, unlike the single server's count-only window.
_NON_REPLICATED_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\s*=\s*(\d+)", re.I)
_REPLICATED_WINDOW = (
    r"replicated_deduplication_window = \1, replicated_deduplication_window_seconds = 604800"
)


def cluster_statements(
    statements: Iterable[str],
    database: str,
    cluster: str,
    *,
    sharding: Mapping[str, str] | None = None,
) -> list[str]:
    """The cluster form of a migration's single-server ``statements`` (see the module doc).

    ``database`` is the database the statements name (``$db`` already substituted);
    ``cluster`` is a cluster name from the servers' ``remote_servers``; ``sharding`` overrides
    the sharding key expression per contract table name (e.g. ``{"spend": "rand()"}``).
    Raises :class:`ValueError` for a cluster or database name that is not a plain identifier
    and for a statement shape cluster mode does not translate.
    """
    for kind, name in (("cluster", cluster), ("database", database)):
        if not _IDENT.match(name):
            raise ValueError(f"{kind} name {name!r} is not a plain identifier")
    out: list[str] = []
    for statement in statements:
        out.extend(_translate(statement.strip(), database, cluster, sharding or {}))
    return out


def sharding_key(columns: Iterable[str], order_by: str, override: str | None = None) -> str:
    """The Distributed sharding expression for a table with these column names and sorting
    key (the ``ORDER BY`` expression): ``person_id``, else ``site_id``, else the sorting key
    (deterministic, and rows a Replacing engine collapses stay together), else ``rand()``."""
    if override is not None:
        return override
    names = set(columns)
    if "person_id" in names:
        return "cityHash64(person_id)"
    if "site_id" in names:
        return "cityHash64(site_id)"
    key = order_by.strip()
    if key.startswith("(") and _matching_paren(key, 0) == len(key) - 1:
        key = key[1:-1].strip()
    if not key or key.lower() == "tuple()":
        return "rand()"
    return f"cityHash64({key})"


def _translate(sql: str, db: str, cluster: str, sharding: Mapping[str, str]) -> list[str]:
    on = f"ON CLUSTER {cluster}"
    if match := _CREATE_DATABASE.match(sql):
        return [f"CREATE DATABASE IF NOT EXISTS {match.group(1)} {on}"]
    if match := _CREATE_TABLE.match(sql):
        _same_database(match.group("db"), db, sql)
        return _create_table(match.group("table"), match.group("rest"), db, cluster, sharding)
    if match := _ALTER_TABLE.match(sql):
        _same_database(match.group("db"), db, sql)
        table, rest = match.group("table"), match.group("rest")
        clauses = _split_top_level(rest)
        column_changes = [bool(_COLUMN_CLAUSE.match(c)) for c in clauses]
        if "MODIFY QUERY" in rest.upper():
            raise ValueError(f"cluster mode does not translate ALTER of a view: {sql[:80]}")
        local = f"ALTER TABLE {db}.{table}{LOCAL_SUFFIX} {on} {rest}"
        if all(column_changes):
            return [local, f"ALTER TABLE {db}.{table} {on} {rest}"]
        if not any(column_changes):
            return [local]
        raise ValueError(f"split column changes from other ALTER clauses: {sql[:80]}")
    if match := _CREATE_MV.match(sql):
        _same_database(match.group("db"), db, sql)
        _same_database(match.group("tdb"), db, sql)
        rest, reads = re.subn(rf"\b{db}\.(\w+)\b", rf"{db}.\1{LOCAL_SUFFIX}", match.group("rest"))
        if not rest.upper().startswith(("AS", "(")) or reads == 0:
            raise ValueError(f"a materialized view must read `{db}.<table>`: {sql[:80]}")
        target = f"{db}.{match.group('target')}{LOCAL_SUFFIX}"
        return [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{match.group('view')} {on} "
            f"TO {target} {rest}"
        ]
    if match := _CREATE_VIEW.match(sql):
        # A plain view reads the Distributed tables by their contract names: nothing to map.
        head = sql[: match.start("name")]
        return [f"{head}{match.group('name')} {on} {match.group('rest')}"]
    raise ValueError(f"cluster mode does not translate this statement: {sql[:80]}")


def _create_table(
    table: str, rest: str, db: str, cluster: str, sharding: Mapping[str, str]
) -> list[str]:
    end = _matching_paren(rest, 0)
    columns_sql, after = rest[: end + 1], rest[end + 1 :]
    engine = _ENGINE.match(after)
    if engine is None:
        raise ValueError(f"CREATE TABLE {db}.{table} has no ENGINE clause")
    name, tail = engine.group("engine"), engine.group("rest")
    if not name.endswith("MergeTree") or name.startswith("Replicated"):
        raise ValueError(f"cluster mode translates *MergeTree engines only, not {name}")
    args = ""
    if tail.startswith("("):
        close = _matching_paren(tail, 0)
        args, tail = tail[1:close].strip(), tail[close + 1 :]
    replicated_args = f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'"
    if args:
        replicated_args += f", {args}"
    tail = tail.strip()
    tail = _NON_REPLICATED_WINDOW.sub(_REPLICATED_WINDOW, tail)
    local = f"{db}.{table}{LOCAL_SUFFIX}"
    order_by = _ORDER_BY.search(tail)
    key = sharding_key(
        _column_names(columns_sql), order_by.group(1) if order_by else "", sharding.get(table)
    )
    on = f"ON CLUSTER {cluster}"
    return [
        f"CREATE TABLE IF NOT EXISTS {local} {on}\n{columns_sql}\n"
        f"ENGINE = Replicated{name}({replicated_args})\n{tail}",
        f"CREATE TABLE IF NOT EXISTS {db}.{table} {on} AS {local}\n"
        f"ENGINE = Distributed('{cluster}', '{db}', '{table}{LOCAL_SUFFIX}', {key})",
    ]


def _column_names(columns_sql: str) -> list[str]:
    names = []
    for item in _split_top_level(columns_sql.strip()[1:-1]):
        first = item.split(None, 1)[0].strip("`") if item.strip() else ""
        if first and first.upper() not in _NOT_A_COLUMN:
            names.append(first)
    return names


def _same_database(found: str, expected: str, sql: str) -> None:
    if found != expected:
        raise ValueError(f"statement names database {found!r}, not {expected!r}: {sql[:80]}")


def _matching_paren(text: str, start: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``start``, skipping quoted text."""
    depth, i, quote = 0, start, ""
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced parentheses in {text[:80]!r}")


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses and quotes, items stripped."""
    items: list[str] = []
    current: list[str] = []
    depth, quote, escaped = 0, "", False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]
