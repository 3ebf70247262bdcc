"""``funnel migrate``, ``funnel reprocess``, ``funnel forget`` and ``funnel spend``: the schema
and its retention, re-deriving history, erasing a person, the marketing spend."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from funnel.cli.root import (
    _config,
    _open_existing,
    _open_store,
    _progress,
    _saved_state,
    _store,
    channels_option,
    database_option,
    err,
    funnels_option,
    main,
    prefix_option,
    store_option,
)
from funnel.identity import customer_key, device_key

if TYPE_CHECKING:
    from funnel.processor import CoreConfig
    from storage.backends import Store
    from storage.forget import Erasure, Subject
    from stream_processors.state import SavedState


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


@main.command()
@click.option("--customer", default=None, help="The customer id of the person to erase.")
@click.option("--anonymous", default=None, help="Or an anonymous (device) id of theirs.")
@click.option("--site", default=None, help="Their site (needed when the store has several).")
@click.option(
    "--requested-by",
    default=lambda: os.environ.get("USER") or "unknown",
    help="Who asked, for the erasure record [the user].",
)
@click.option(
    "--kafka",
    envvar="FUNNEL_KAFKA",
    default=None,
    help="Kafka mode: also erase the workers' state of the person (bootstrap servers).",
)
@prefix_option
@click.option(
    "--sink-group",
    default="funnel-sink",
    show_default=True,
    help="Kafka mode: the sink's consumer group (its rows of the person land first).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Kafka mode: seconds to wait for the workers and the sink.",
)
@funnels_option
@channels_option
@store_option
@database_option
def forget(
    customer: str | None,
    anonymous: str | None,
    site: str | None,
    requested_by: str,
    kafka: str | None,
    topic_prefix: str,
    sink_group: str,
    wait_s: float,
    funnels_file: Path | None,
    channels_file: Path | None,
    store: str,
    database: str,
) -> None:
    """Erase a person: their events, facts, dead letters, aggregates' share and state.

    A customer id erases the customer and every device linked to them; an anonymous id
    erases its device, or the customer it was linked to with all their devices. Reports
    afterwards are those of a store that never received them. The erasure is recorded in
    `erasures` (who, when, how many rows), without the erased data.

    Embedded store: stop `funnel serve` first (the store belongs to one process). Kafka mode
    (--kafka): with the workers and the sink running, the workers drop the person's state
    and device links (tombstones in their changelogs and on facts.persons), the sink lands
    what the person left, then the store's rows go. Their records in the events and rejected
    topics stay until the topics' retention drops them.
    """
    from storage.forget import NoSuchPerson, erase, find_subject
    from storage.reports.sites import site_ids

    if (customer is None) == (anonymous is None):
        raise click.UsageError("give --customer or --anonymous (one of them)")
    config = _config(funnels_file, channels_file)
    db = _open_existing(store, database)
    at = datetime.now(UTC)
    try:
        if site is None:
            sites = site_ids(db)
            if len(sites) != 1:
                raise click.BadParameter(
                    f"the store holds {len(sites)} sites ({', '.join(sites) or 'none'}): say which",
                    param_hint="--site",
                )
            site = sites[0]
        if kafka is not None:
            subject, erasure, where = _forget_in_stream(
                db,
                kafka,
                topic_prefix,
                site,
                customer,
                anonymous,
                requested_by,
                at,
                sink_group,
                wait_s,
                store.startswith("chdb"),
            )
        else:
            saved = _saved_state(store, database, config)
            try:
                _land_pending(db, config, saved)  # nothing of the person comes after
                try:
                    subject = find_subject(db, site, customer=customer, anonymous=anonymous)
                except NoSuchPerson as exc:
                    raise click.ClickException(str(exc)) from None
                erasure = erase(db, subject, requested_by=requested_by, at=at)
                keys = {customer_key(site, c) for c in subject.customer_ids}
                keys |= {device_key(site, a) for a in subject.anonymous_ids}
                where = f"{saved.forget(keys)} person state(s) dropped"
            finally:
                saved.close()
    finally:
        db.close()
    tables = ", ".join(f"{table} {n:,}" for table, n in erasure.rows.items() if n)
    err.print(
        f"erased {erasure.total:,} row(s) of {len(subject.person_ids)} person id(s) in site "
        f"{site!r} ({tables}); {erasure.buckets:,} aggregate bucket(s) rebuilt; {where}; "
        "recorded in erasures"
    )
    if kafka is None and not store.startswith("chdb"):
        err.print(
            "[yellow]a server store without --kafka: the Kafka workers' state of this person "
            "is not erased[/]"
        )


def _land_pending(db: Store, config: CoreConfig, saved: SavedState) -> None:
    """Land what the embedded runner had not landed yet."""
    from stream_processors.embedded import EmbeddedPipeline

    pipeline = EmbeddedPipeline(db, config, saved=saved)
    try:
        pipeline.flush()
    finally:
        pipeline.close()


def _forget_in_stream(
    db: Store,
    kafka: str,
    prefix: str,
    site: str,
    customer: str | None,
    anonymous: str | None,
    requested_by: str,
    at: datetime,
    sink_group: str,
    wait_s: float,
    db_is_embedded: bool,
) -> tuple[Subject, Erasure, str]:
    """``funnel forget``'s Kafka mode (:mod:`stream_processors.forget`), its errors the
    command's; the last item says what the workers did."""
    from funnel.topics import TopicNames
    from storage.forget import NoSuchPerson
    from stream_processors.forget import StreamTimeout, erase_person

    try:
        subject, erasure, done = erase_person(
            db,
            kafka,
            TopicNames(prefix),
            site,
            customer=customer,
            anonymous=anonymous,
            requested_by=requested_by,
            at=at,
            sink_group=sink_group,
            timeout_s=wait_s,
            own_sink=db_is_embedded,
        )
    except (NoSuchPerson, StreamTimeout) as exc:
        raise click.ClickException(str(exc)) from None
    where = (
        f"the workers erased the state of {done.states} person key(s) and {done.links} device "
        f"link(s) ({done.tombstones} tombstone(s) on facts.persons)"
    )
    return subject, erasure, where


@main.command()
@click.option("--site", "sites", multiple=True, help="Only this site (repeatable) [all].")
@click.option(
    "--from", "start", default=None, help="Only persons with an event from then (date/time)."
)
@click.option("--to", "end", default=None, help="… until then (a date includes that day).")
@funnels_option
@channels_option
@store_option
@database_option
def reprocess(
    sites: tuple[str, ...],
    start: str | None,
    end: str | None,
    funnels_file: Path | None,
    channels_file: Path | None,
    store: str,
    database: str,
) -> None:
    """Re-derive every fact of the stored events with the current rules and funnels.

    After a change of channel rules, funnels or lead rules (FUNNEL_CHANNELS, FUNNEL_FUNNELS,
    FUNNEL_LEADS), the history is derived again through the same runtime as the stream: the
    events' channels, stages, credits, persons and lead changes, and the aggregates. Running
    it twice gives the same tables. --from/--to re-derive only the persons with an event in
    that period, each whole (their facts depend on their whole history). Embedded store:
    stop `funnel serve` first (the store belongs to one process; senders retry meanwhile).
    """
    from storage.reports.scope import parse_when
    from storage.reports.sites import site_ids
    from stream_processors.reprocess import reprocess as run

    try:
        since = parse_when(start) if start else None
        until = parse_when(end, end=True) if end else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from/--to") from None

    if not store.startswith("chdb"):
        raise click.UsageError(
            "reprocess runs on the embedded store; against a ClickHouse server it would not be "
            "atomic for its readers yet"
        )
    config = _config(funnels_file, channels_file)
    db = _open_existing(store, database)
    saved = _saved_state(store, database, config)
    try:
        known = site_ids(db)
        unknown = sorted(set(sites) - set(known))
        if unknown:
            raise click.BadParameter(
                f"no events of site {', '.join(map(repr, unknown))} (sites: "
                f"{', '.join(known) or 'none'})",
                param_hint="--site",
            )
        chosen = list(sites) or known
        total = sum(
            int(
                db.query(
                    f"SELECT count() AS n FROM {db.database}.events "
                    "WHERE site_id = {site:String}",
                    {"site": site},
                )[0]["n"]
            )
            for site in chosen
        )
        with _progress() as progress:
            task = progress.add_task("reprocessing", total=total)
            try:
                result = run(
                    db,
                    saved,
                    config,
                    chosen,
                    start=since,
                    end=until,
                    on_events=lambda n: progress.advance(task, n),
                )
            except ValueError as exc:  # events stored before they were kept whole
                raise click.ClickException(str(exc)) from None
    finally:
        saved.close()
        db.close()
    err.print(
        f"reprocessed {result.events:,} events of {', '.join(result.sites) or 'no site'}: "
        f"{result.rows_before:,} derived rows before, {result.rows_after:,} now"
    )


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
