"""``funnel migrate`` and ``funnel spend``: the store's schema and the marketing spend."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from funnel.cli.root import (
    _config,
    _open_store,
    _progress,
    _store,
    channels_option,
    database_option,
    err,
    main,
    store_option,
)


@main.command()
@store_option
@database_option
@click.option(
    "--cluster",
    envvar="FUNNEL_CLUSTER",
    default=None,
    help="Create the schema on this ClickHouse cluster (ON CLUSTER, Replicated tables, "
    "Distributed tables sharded by person): see storage/README.md.",
)
@click.option(
    "--print-sql",
    is_flag=True,
    help="Print every migration's statements (in their --cluster form if given) and exit, "
    "without connecting: for review, or to run with clickhouse-client.",
)
@click.option(
    "--keep-events",
    envvar="FUNNEL_RETENTION_EVENTS_DAYS",
    default=None,
    help="Days to keep raw events, or 'forever' [forever].",
)
@click.option(
    "--keep-facts",
    envvar="FUNNEL_RETENTION_FACTS_DAYS",
    default=None,
    help="Days to keep the derived facts (stages, credits, lead changes, persons) [forever].",
)
@click.option(
    "--keep-rejected",
    envvar="FUNNEL_RETENTION_REJECTED_DAYS",
    default=None,
    help="Days to keep dead letters (raw payloads) [30].",
)
def migrate(
    store: str,
    database: str,
    cluster: str | None,
    print_sql: bool,
    keep_events: str | None,
    keep_facts: str | None,
    keep_rejected: str | None,
) -> None:
    """Create or upgrade the ClickHouse schema (idempotent) and set how long each table keeps
    its rows (ClickHouse TTLs; see storage/retention.py). The aggregates keep counts, no
    person: the minute one 14 days, the others for good."""
    from storage.cluster import cluster_statements
    from storage.migrate import migrate as run_migrations
    from storage.migrate import migrations
    from storage.retention import Retention, apply_retention

    try:
        retention = Retention.parse(
            {"events": keep_events, "facts": keep_facts, "rejected": keep_rejected}
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--keep-*") from None

    if print_sql:
        for m in migrations():
            statements = m.statements(database)
            if cluster:
                statements = cluster_statements(statements, database, cluster)
            click.echo(f"-- {m.version:04d} {m.name}")
            for statement in statements:
                click.echo(statement + ";\n")
        return

    db = _store(store, database)
    try:
        with _progress() as progress:
            task = progress.add_task("migrating", total=len(migrations()))
            applied = run_migrations(db, cluster=cluster, on_step=lambda _: progress.advance(task))
        apply_retention(db, retention, cluster)
    finally:
        db.close()
    for m in applied:
        err.print(f"applied {m.version:04d} {m.name}")
    err.print(f"schema of {database} is up to date ({len(applied)} migration(s) applied)")
    kept = ", ".join(f"{name} {days}" for name, days in retention.describe().items())
    err.print(f"retention: {kept}")


@main.group()
def spend() -> None:
    """Marketing spend (for CPL, CAC and ROAS in the channels report)."""


@spend.command("load")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="The site of rows without a site_id column.")
@channels_option
@store_option
@database_option
def spend_load(
    csv_file: Path, site: str | None, channels_file: Path | None, store: str, database: str
) -> None:
    """Load spend from a CSV (date,site_id,channel,campaign,cost,currency); re-loading a
    day replaces it. Bad lines are skipped and listed (JSON lines on stderr); the exit code
    is 1 when any line was rejected. A file that is not UTF-8 or mixes currencies within a
    site is refused whole (exit 2); channels the rules never produce load with a warning."""
    from storage.spend import SpendFileError, load_spend

    rules = _config(None, channels_file).channels
    db = _open_store(store, database)
    try:
        with _progress() as progress:
            task = progress.add_task(f"loading {csv_file.name}", total=None)
            result = load_spend(db, csv_file, site_id=site, channels=rules)
            progress.update(task, total=result.loaded, completed=result.loaded)
    except SpendFileError as exc:
        refused = click.ClickException(str(exc))
        refused.exit_code = 2  # a usage error: the file, not the store, is at fault
        raise refused from exc
    finally:
        db.close()
    for rejection in result.rejected:
        click.echo(json.dumps(rejection), err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    err.print(f"loaded {result.loaded:,} spend row(s), rejected {len(result.rejected):,}")
    if result.rejected:
        sys.exit(1)
