"""Apply the versioned schema migrations (``storage/migrations/NNNN_*.sql``) idempotently.

Each migration file is a list of statements separated by ``;`` at the end of a line, with
``$db`` standing for the configured database. Applied versions are recorded in
``<db>.schema_migrations``; running :func:`migrate` again applies only what is new.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from string import Template

from storage.backends import Store
from storage.cluster import cluster_statements

__all__ = ["Migration", "clear_site", "migrate", "migrations"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, database: str) -> list[str]:
        text = Template(self.sql).substitute(db=database)
        without_comments = "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*$", without_comments, flags=re.M) if s.strip()]


def migrations() -> list[Migration]:
    """All migrations shipped with funnel, in version order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(
    store: Store,
    cluster: str | None = None,
    *,
    on_step: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Bring ``store.database`` up to date; return the migrations applied by this call.
    ``on_step`` is called after each shipped migration, applied now or before (progress).

    ``cluster`` names a cluster of the servers' ``remote_servers`` configuration (the CLI
    takes it from ``--cluster`` or ``FUNNEL_CLUSTER``). With it every statement, the
    ``schema_migrations`` table's included, runs in its cluster form
    (:func:`storage.cluster.cluster_statements`: ON CLUSTER, Replicated ``<table>_local``
    tables, Distributed tables under the contract names); see ``storage/README.md`` (cluster mode).
    """
    db = store.database

    def ddl(statements: list[str]) -> list[str]:
        return statements if cluster is None else cluster_statements(statements, db, cluster)

    for statement in ddl(
        [
            f"CREATE DATABASE IF NOT EXISTS {db}",
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplacingMergeTree ORDER BY version",
        ]
    ):
        store.execute(statement)
    done = {int(r["version"]) for r in store.query(f"SELECT version FROM {db}.schema_migrations")}
    applied = []
    for migration in migrations():
        if migration.version in done:
            if on_step is not None:
                on_step(migration)
            continue
        for statement in ddl(migration.statements(db)):
            store.execute(statement)
        store.insert(
            "schema_migrations",
            [
                {
                    "version": migration.version,
                    "name": migration.name,
                    "applied_at": datetime.now(UTC),
                }
            ],
        )
        applied.append(migration)
        if on_step is not None:
            on_step(migration)
    return applied


def clear_site(store: Store, site_id: str) -> list[str]:
    """Delete every row of ``site_id`` from every table that has a ``site_id`` column — facts,
    aggregates, spend, dead letters — so that a site can be rebuilt (``funnel demo`` re-runs).
    Returns the tables cleared. Views are skipped: their target tables are cleared."""
    tables = [
        str(row["table"])
        for row in store.query(
            "SELECT c.table AS table FROM system.columns AS c INNER JOIN system.tables AS t "
            "ON c.database = t.database AND c.table = t.name "
            "WHERE c.database = {db:String} AND c.name = 'site_id' "
            "AND t.engine LIKE '%MergeTree' ORDER BY c.table",
            {"db": store.database},
        )
    ]
    for table in tables:
        name = f"{store.database}.{table}"
        [other] = store.query(
            f"SELECT count() AS n FROM {name} WHERE site_id != {{site:String}}", {"site": site_id}
        )
        if int(other["n"]) == 0:  # the site's rows only (the demo's store): much faster
            store.execute(f"TRUNCATE TABLE {name}")
        else:
            store.execute(f"DELETE FROM {name} WHERE site_id = {{site:String}}", {"site": site_id})
    return tables
