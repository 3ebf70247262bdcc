"""The ``funnel`` command: the one composition root that wires the core to its adapters.

Adapters (Kafka, Faust, ClickHouse, chDB) are imported lazily inside each command, so
``funnel --help`` stays fast and the core stays free of them.

Expected mistakes end in one line on stderr and exit code 2, never a traceback: a store that
cannot be opened or reached, a store URL of another scheme, a configuration file that is not
valid, a broker that does not answer, a file that is not there (:func:`_expected`, applied
once for every command by the root group). Anything else is a bug and shows its traceback;
``--log-level debug`` shows the traceback of a refused one too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from funnel.logs import FORMATS
from funnel.logs import configure as configure_logging
from funnel.processor import CoreConfig
from funnel.settings import (
    DEFAULT_DATABASE,
    DEFAULT_KAFKA,
    DEFAULT_PARTITIONS,
    DEFAULT_STORE,
    DEFAULT_TOPIC_PREFIX,
)
from storage.reports.commands import ReportOptions, sites_command
from storage.reports.commands import register as register_reports

if TYPE_CHECKING:
    from funnel.leads import LeadRules
    from storage.backends import Store

T = TypeVar("T")
log = logging.getLogger(__name__)

err = Console(stderr=True)
out = Console()

store_option = click.option(
    "--store",
    envvar="FUNNEL_STORE",
    default=DEFAULT_STORE,
    show_default=True,
    help="chdb:///path (embedded) or clickhouse://user:pass@host:9000/db (server).",
)
database_option = click.option(
    "--database", envvar="FUNNEL_DATABASE", default=DEFAULT_DATABASE, show_default=True
)
kafka_option = click.option(
    "--kafka",
    envvar="FUNNEL_KAFKA",
    default=DEFAULT_KAFKA,
    show_default=True,
    help="Kafka bootstrap servers.",
)
funnels_option = click.option(
    "--funnels",
    "funnels_file",
    envvar="FUNNEL_FUNNELS",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Funnel definitions (TOML).",
)
channels_option = click.option(
    "--channels",
    "channels_file",
    envvar="FUNNEL_CHANNELS",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Channel rules (TOML).",
)
prefix_option = click.option(
    "--topic-prefix",
    envvar="FUNNEL_TOPIC_PREFIX",
    default=DEFAULT_TOPIC_PREFIX,
    show_default=True,
    help="Prefix of every topic name.",
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)


class Refused(click.ClickException):
    """An expected mistake: one line on stderr (``Error: …``), exit code 2."""

    exit_code = 2


def _expected(exc: Exception) -> str | None:
    """The one-line message of an exception that is an expected mistake, else ``None``.

    Imports happen here, on the error path only: an exception of an adapter's type means
    its module is loaded already.
    """
    from storage.backends import StoreUnavailable

    if isinstance(exc, StoreUnavailable):
        return _one_line(f"store unavailable: {exc}")
    if isinstance(exc, FileNotFoundError) and exc.strerror:
        named = exc.filename is not None and str(exc.filename) not in exc.strerror
        return _one_line(exc.strerror + (f": {exc.filename}" if named else ""))
    if "kafka.errors" in sys.modules:  # never load the Kafka client to look at an error
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        if isinstance(exc, KafkaTimeoutError | KafkaConnectionError):
            return _one_line(f"Kafka unavailable: {exc}")
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Root(click.Group):
    """The ``funnel`` group: turns expected mistakes into :class:`Refused` (module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as exc:
            message = _expected(exc)
            if message is None:
                raise
            log.debug("refused", exc_info=True)
            raise Refused(message) from exc


def _from_file(load: Callable[[Path], T], path: Path, option: str) -> T:
    """A configuration file loaded, or a usage error naming the option, the file and the
    problem in one line (TOML syntax, or what the model refuses)."""
    import tomllib

    from pydantic import ValidationError

    try:
        return load(path)
    except tomllib.TOMLDecodeError as exc:
        problem = f"not valid TOML: {exc}"
    except ValidationError as exc:
        problem = "invalid: " + "; ".join(
            ".".join(str(part) for part in error["loc"]) + f": {error['msg']}"
            if error["loc"]
            else error["msg"]
            for error in exc.errors()
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = str(exc)
    raise click.BadParameter(_one_line(f"{path}: {problem}"), param_hint=option)


def _config(funnels_file: Path | None, channels_file: Path | None) -> CoreConfig:
    """The core's configuration; a funnels or channels file it cannot use is a usage error."""
    from funnel.channels import ChannelRules
    from funnel.funnels import FunnelCatalog

    # Checked one by one first, to name the file at fault (they are small: read twice).
    if funnels_file is not None:
        _from_file(FunnelCatalog.from_file, funnels_file, "--funnels")
    if channels_file is not None:
        _from_file(ChannelRules.from_file, channels_file, "--channels")
    return CoreConfig.from_files(funnels_file, channels_file, leads=_lead_rules())


def _lead_rules() -> LeadRules:
    """The lead rules of ``FUNNEL_LEADS`` (``--leads``), else the defaults; a usage error
    for a file that is not valid rules (the message names the file)."""
    from funnel.leads import LeadRulesError, load_lead_rules

    try:
        return load_lead_rules()
    except LeadRulesError as exc:
        raise click.BadParameter(str(exc), param_hint="--leads") from None


def _store(url: str, database: str, *, create: bool = True) -> Store:
    """``open_store``, a URL of an unknown scheme being a usage error of ``--store``."""
    from storage.backends import open_store

    try:
        return open_store(url, database, create=create)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from exc


def _open_store(url: str, database: str, *, create: bool = True) -> Store:
    """The store, migrated; with ``create=False`` an embedded store must exist already."""
    from storage.migrate import migrate

    store = _store(url, database, create=create)
    migrate(store)
    return store


def _open_existing(url: str, database: str) -> Store:
    """A store to read: never created here (``FileNotFoundError`` when it is not there)."""
    return _open_store(url, database, create=False)


def _require_kafka(bootstrap: str, timeout_s: float = 3.0) -> None:
    """Fail fast (a few seconds, not the client's 30) when no broker answers at ``bootstrap``."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # its bootstrap errors say what the refusal says
    try:
        KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="funnel-probe",
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
        ).close()
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise Refused(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s ({exc}); "
            "start one (funnel dev kafka) or point --kafka / FUNNEL_KAFKA at one"
        ) from exc
    finally:
        client_log.setLevel(level)


class _WithoutTraceback(logging.Filter):
    """Drops the traceback of a record, keeping its line: clickhouse-driver logs a failed
    connection with one, and the :class:`StoreUnavailable` raised for it says the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@click.group(cls=_Root)
@click.version_option(package_name="funnel")
@click.option(
    "--log-level",
    envvar="FUNNEL_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
)
@click.option(
    "--log-format",
    envvar="FUNNEL_LOG_FORMAT",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line on stderr, for log shippers.",
)
@click.option(
    "--leads",
    "leads_file",
    envvar="FUNNEL_LEADS",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Lead temperature rules (TOML, the format of funnel/defaults/leads.toml).",
)
def main(log_level: str, log_format: str, leads_file: Path | None) -> None:
    """funnel: where your sales funnel leaks and which channels pay, seconds after it happens."""
    if leads_file is not None:
        # Every command and the processes it starts (workers) read the rules from there.
        os.environ["FUNNEL_LEADS"] = str(leads_file)
        _lead_rules()  # a file it cannot use fails now, in one line
    configure_logging(log_level, log_format)
    driver = logging.getLogger("clickhouse_driver.connection")
    if log_level.lower() != "debug" and not any(
        isinstance(f, _WithoutTraceback) for f in driver.filters
    ):
        driver.addFilter(_WithoutTraceback())


@main.command()
@click.option("--persons", default=20_000, show_default=True, help="Simulated people.")
@click.option("--seed", default=7, show_default=True)
@click.option("--site", default="demo", show_default=True)
@click.option("--funnel", "funnel_name", default="sales", show_default=True)
@store_option
@database_option
@funnels_option
@channels_option
@format_option
def demo(
    persons: int,
    seed: int,
    site: str,
    funnel_name: str,
    store: str,
    database: str,
    funnels_file: Path | None,
    channels_file: Path | None,
    fmt: str,
) -> None:
    """Simulate a population, process it in-process into the embedded store, print the report.

    The demo's site is replaced on every run, so running it twice gives the same report.
    """
    from producers.simulator import simulate
    from storage.migrate import clear_site
    from storage.reports import ReportScope, funnel_report
    from storage.reports.commands import print_funnels
    from stream_processors.embedded import EmbeddedPipeline

    config = _config(funnels_file, channels_file)
    try:
        spec = config.funnels.get(funnel_name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--funnel") from exc
    started = time.perf_counter()
    db = _open_store(store, database)
    try:
        clear_site(db, site)
        with _progress() as progress:
            task = progress.add_task("simulating", total=None)
            sim = simulate(persons, seed=seed, site_id=site, funnels=config.funnels)
            progress.update(task, total=len(sim.events), completed=len(sim.events))
            task = progress.add_task("processing", total=len(sim.events))
            pipeline = EmbeddedPipeline(db, config)
            for i, event in enumerate(sim.events, 1):
                pipeline.submit(event)
                if i % 5000 == 0:
                    progress.update(task, completed=i)
            pipeline.expire()  # the status timer: windows that expired by now have dropped
            pipeline.flush()
            progress.update(task, completed=len(sim.events))
        reports = funnel_report(db, spec, ReportScope(site=site))
    finally:
        db.close()
    elapsed = time.perf_counter() - started
    err.print(
        f"{len(sim.events):,} events from {persons:,} people processed into {store} "
        f"in {elapsed:.1f} s"
    )
    print_funnels(reports, fmt)
    if fmt == "table":
        where = "" if store == DEFAULT_STORE else f" --store {store}"
        err.print(
            f"Next: funnel report dropoff{where} · funnel report attribution{where} · "
            f"funnel report channels{where} · funnel serve{where} (the live page)"
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
def migrate(store: str, database: str, cluster: str | None, print_sql: bool) -> None:
    """Create or upgrade the ClickHouse schema (idempotent)."""
    from storage.cluster import cluster_statements
    from storage.migrate import migrate as run_migrations
    from storage.migrate import migrations

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
    finally:
        db.close()
    for m in applied:
        err.print(f"applied {m.version:04d} {m.name}")
    err.print(f"schema of {database} is up to date ({len(applied)} migration(s) applied)")


@main.group()
def report() -> None:
    """Answers from the stored facts."""


_report_options = ReportOptions(
    store=store_option,
    database=database_option,
    funnels=funnels_option,
    fmt=format_option,
    open_store=_open_existing,
    funnel_catalog=lambda path: _config(path, None).funnels,
)
register_reports(report, _report_options)
main.add_command(sites_command(_report_options))


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


@main.command()
@kafka_option
@funnels_option
@channels_option
@click.option(
    "--partitions", default=DEFAULT_PARTITIONS, show_default=True, help="Partitions of new topics."
)
@click.option("--web-port", default=6066, show_default=True, help="Faust's web port.")
@click.option(
    "--data-dir",
    default=".funnel-worker",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--loglevel", default="warning", show_default=True)
@click.option(
    "--app-id",
    envvar="FUNNEL_APP_ID",
    default="funnel",
    show_default=True,
    help="Faust app id (also the consumer group).",
)
@click.option(
    "--status-every",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between status timer ticks (expired windows turn 'dropped').",
)
@prefix_option
def worker(
    kafka: str,
    funnels_file: Path | None,
    channels_file: Path | None,
    partitions: int,
    web_port: int,
    data_dir: Path,
    loglevel: str,
    app_id: str,
    status_every: float,
    topic_prefix: str,
) -> None:
    """Run a Faust stream worker: events topic in, facts topics out."""
    from funnel.topics import TopicNames
    from stream_processors.app import WorkerSettings, run_worker
    from stream_processors.topics import create_topics

    names = TopicNames(topic_prefix)
    create_topics(kafka, names, partitions)
    run_worker(
        WorkerSettings(
            kafka=kafka,
            partitions=partitions,
            web_port=web_port,
            data_dir=data_dir,
            funnels_file=funnels_file,
            channels_file=channels_file,
            app_id=app_id,
            topics=names,
            status_timer_s=status_every,
        ),
        loglevel=loglevel,
    )


@main.command()
@kafka_option
@store_option
@database_option
@click.option("--group", default="funnel-sink", show_default=True, help="Consumer group.")
@click.option(
    "--instance-id",
    envvar="FUNNEL_SINK_INSTANCE_ID",
    default=None,
    help="Static group member id, unique per sink: a restart takes its partitions back at once.",
)
@click.option(
    "--metrics-port",
    envvar="FUNNEL_SINK_METRICS_PORT",
    type=int,
    default=None,
    help="Serve Prometheus metrics on this port (GET /metrics).",
)
@prefix_option
def sink(
    kafka: str,
    store: str,
    database: str,
    group: str,
    instance_id: str | None,
    metrics_port: int | None,
    topic_prefix: str,
) -> None:
    """Land the facts topics in ClickHouse, exactly once per offset range."""
    from prometheus_client import start_http_server

    from funnel.topics import TopicNames
    from storage.sink import Sink
    from storage.sink_metrics import SinkMetrics

    metrics = SinkMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=metrics.registry)
    db = _open_store(store, database)
    try:
        sink = Sink(
            db,
            bootstrap_servers=kafka,
            group_id=group,
            instance_id=instance_id,
            topics=TopicNames(topic_prefix),
            metrics=metrics,
        )
        sink.run_forever()
    finally:
        db.close()


@main.command()
@click.option(
    "--to",
    "target",
    type=click.Choice(["kafka", "http", "inprocess"]),
    default="kafka",
    show_default=True,
    help="Where the events go.",
)
@click.option("--kafka", envvar="FUNNEL_KAFKA", default=DEFAULT_KAFKA, show_default=True)
@click.option(
    "--endpoint",
    envvar="FUNNEL_ENDPOINT",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Collector base URL (--to http).",
)
@click.option(
    "--write-key", envvar="FUNNEL_WRITE_KEY", default=None, help="The site's write key (--to http)."
)
@store_option
@database_option
@click.option("--persons", default=1000, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--site", default="demo", show_default=True)
@click.option(
    "--messy",
    is_flag=True,
    help="Duplicates, reordering, skewed clocks, late and malformed events, at realistic rates.",
)
@click.option(
    "--multi-device",
    default=0.0,
    show_default=True,
    help="Share of known customers who go on from a second device.",
)
@click.option("--bots", default=0, show_default=True, help="Crawler page views to add.")
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the ground truth (JSON lines per person) here.",
)
@click.option(
    "--spend",
    "spend_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the simulated ad spend (CSV) here.",
)
@click.option(
    "--partitions", default=DEFAULT_PARTITIONS, show_default=True, help="Partitions of new topics."
)
@prefix_option
def simulate(
    target: str,
    kafka: str,
    endpoint: str,
    write_key: str | None,
    store: str,
    database: str,
    persons: int,
    seed: int,
    site: str,
    messy: bool,
    multi_device: float,
    bots: int,
    truth: Path | None,
    spend_file: Path | None,
    partitions: int,
    topic_prefix: str,
) -> None:
    """Simulate a population and send its events to Kafka, a collector, or in-process."""
    from producers.messiness import Mess, arrivals
    from producers.replay import Sent, send_http, send_inprocess, send_kafka
    from producers.simulator import simulate as run_simulation

    if target == "http" and not write_key:
        raise click.UsageError("--to http needs --write-key (or FUNNEL_WRITE_KEY)")
    if target == "kafka":
        _require_kafka(kafka)
    sim = run_simulation(persons, seed=seed, site_id=site, multi_device=multi_device, bots=bots)
    stream = arrivals(sim.events, Mess.realistic() if messy else Mess(), seed=seed)
    sent: Sent
    with _progress() as progress:
        task = progress.add_task(f"sending to {target}", total=len(stream))

        def advance(n: int) -> None:
            progress.advance(task, n)

        if target == "kafka":
            from funnel.topics import TopicNames
            from stream_processors.topics import create_topics

            names = TopicNames(topic_prefix)
            create_topics(kafka, names, partitions)
            sent = send_kafka(stream, kafka, names.events, progress=advance)
        elif target == "http":
            sent = send_http(stream, endpoint, write_key or "", progress=advance)
        else:
            from stream_processors.embedded import EmbeddedPipeline

            db = _open_store(store, database)
            try:
                pipeline = EmbeddedPipeline(db, _config(None, None))
                sent = send_inprocess(stream, pipeline, site, progress=advance)
            finally:
                db.close()
    if truth is not None:
        sim.truth.write(truth)
    if spend_file is not None:
        sim.write_spend(spend_file)
    err.print(
        f"sent {len(stream):,} payloads for {persons:,} people to {target}: "
        f"{sent.accepted:,} accepted, {sent.rejected:,} rejected"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, help="0: a free port (printed).")
@click.option(
    "--kafka",
    "kafka",
    envvar="FUNNEL_KAFKA",
    default=None,
    help="Produce to this Kafka instead of processing in-process.",
)
@store_option
@database_option
@funnels_option
@channels_option
@prefix_option
@click.option(
    "--partitions", default=DEFAULT_PARTITIONS, show_default=True, help="Partitions of new topics."
)
@click.option(
    "--allowed-hosts",
    envvar="FUNNEL_ALLOWED_HOSTS",
    default=None,
    help="Host names the live page and report API answer to, comma-separated "
    "(default: localhost,127.0.0.1,[::1]; * for any). Guards against DNS rebinding.",
)
def serve(
    host: str,
    port: int,
    kafka: str | None,
    store: str,
    database: str,
    funnels_file: Path | None,
    channels_file: Path | None,
    topic_prefix: str,
    partitions: int,
    allowed_hosts: str | None,
) -> None:
    """Run the collector: embedded processing into the store, or produce to Kafka (--kafka).

    Write keys come from FUNNEL_WRITE_KEYS ("key:site,...") or FUNNEL_WRITE_KEYS_FILE; with
    none configured, a one-off key for site "demo" is made up and printed.

    Embedded, it also serves the live page (GET /) and the report API (GET /api/reports/…)
    of its store, unauthenticated: keep --host on loopback or behind a proxy that guards
    them. `funnel report` asks this process while it runs (it owns the store).
    """
    import secrets

    from producers.collector import (
        CollectorSettings,
        Delivery,
        EmbeddedDelivery,
        KafkaDelivery,
        create_app,
    )
    from producers.collector.serving import run

    overrides: dict[str, object] = {}
    if allowed_hosts:
        overrides["allowed_hosts"] = allowed_hosts
    settings = CollectorSettings.from_env(None, **overrides)
    if not settings.write_keys:
        key = secrets.token_urlsafe(18)
        settings = CollectorSettings.from_env(None, write_keys={key: "demo"}, **overrides)
        err.print(f"[yellow]no write keys configured: using key {key} for site 'demo'[/]")
    delivery: Delivery
    db = None
    live = None
    owner_of = None
    if kafka:
        from funnel.topics import TopicNames
        from stream_processors.topics import create_topics

        names = TopicNames(topic_prefix)
        create_topics(kafka, names, partitions)
        delivery = KafkaDelivery(
            kafka,
            events_topic=names.events,
            rejected_topic=names.rejected,
            ack_timeout_s=settings.ack_timeout_s,
        )
        err.print(f"collector → Kafka {kafka} ({names.events})")
    else:
        from producers.collector.live import CommitGate, GatedPipeline, LiveReports
        from storage.reports.owner import store_directory

        config = _config(funnels_file, channels_file)
        db = _open_store(store, database)
        gate = CommitGate()
        delivery = EmbeddedDelivery(GatedPipeline(db, config, gate))
        # This process owns the store (chDB: one process per directory), so it answers
        # reports for everyone: the API, the live page, and `funnel report` through them.
        live = LiveReports(db, config.funnels, gate)
        owner_of = store_directory(store)
        err.print(f"collector → embedded store {store}")

    def listening(url: str) -> None:
        if live is not None:
            err.print(f"live page and report API on {url}/")
        else:
            err.print(f"collector on {url}")

    try:
        run(
            create_app(settings, delivery, live=live),
            host,
            port,
            owner_of=owner_of,
            database=database,
            on_listen=listening,
        )
    finally:
        if db is not None:
            db.close()


@main.group()
def dev() -> None:
    """Local development services."""


@dev.command("kafka")
@click.option("--port", type=int, default=None, help="Broker port (default: a free one).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the broker's data here (default: a temporary directory).",
)
def dev_kafka(port: int | None, data_dir: Path | None) -> None:
    """Start a single-node Apache Kafka broker (KRaft) from its Maven jars; Ctrl-C stops it."""
    from stream_processors.kafka_broker import serve_forever

    serve_forever(port, data_dir)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
