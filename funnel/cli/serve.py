"""``funnel serve``: the collector, embedded or into Kafka."""

from __future__ import annotations

import os
from pathlib import Path

import click

from funnel.cli.root import (
    _config,
    _open_store,
    _saved_state,
    channels_option,
    database_option,
    err,
    funnels_option,
    main,
    prefix_option,
    store_option,
)
from funnel.settings import (
    DEFAULT_PARTITIONS,
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
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Collector processes on the one port (Kafka mode only: embedded mode is one process, "
    "the one owner of its chDB store).",
)
@click.option(
    "--metrics-port",
    envvar="FUNNEL_METRICS_PORT",
    type=int,
    default=None,
    help="Also serve Prometheus metrics on this port of --host, without a key (for a scraper "
    "on a private network; on the main port /metrics needs a read key of every site).",
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
    workers: int,
    metrics_port: int | None,
) -> None:
    """Run the collector: embedded processing into the store, or produce to Kafka (--kafka).

    Write keys come from FUNNEL_WRITE_KEYS ("key:site,...") or FUNNEL_WRITE_KEYS_FILE; with
    none configured, a one-off key for site "demo" is made up and written to a file only you
    can read (the store directory's write-key; its last characters are printed).

    Embedded, it also serves the live page (GET /) and the report API (GET /api/reports/…)
    of its store, for read keys (FUNNEL_READ_KEYS="key:site1|site2,key2:*", or
    FUNNEL_READ_KEYS_FILE) and the one it makes up at each start (the store directory's
    read-key, readable by you only): `Authorization: Bearer <key>`, or the page's login
    form. `funnel report` asks this process while it runs (it owns the store), with that
    key.
    """
    import secrets

    from prometheus_client import CollectorRegistry, start_http_server

    from producers.collector import (
        CollectorSettings,
        Delivery,
        EmbeddedDelivery,
        KafkaDelivery,
        create_app,
    )
    from producers.collector.serving import run, run_kafka_workers
    from producers.collector.settings import key_digest, masked
    from storage.reports.owner import READ_KEY_FILE

    if workers > 1 and not kafka:
        raise click.UsageError(
            "--workers needs --kafka: embedded mode is one process (chDB: one owner per store)"
        )
    if workers > 1 and port == 0:
        raise click.UsageError("--workers needs a fixed --port")
    if workers > 1 and metrics_port is not None:
        raise click.UsageError(
            "--metrics-port serves one process's metrics: with --workers, scrape /metrics "
            "on the main port with a read key of every site"
        )
    overrides: dict[str, object] = {}
    if allowed_hosts:
        overrides["allowed_hosts"] = allowed_hosts
    settings = CollectorSettings.from_env(None, **overrides)
    one_off_key = None
    if not settings.write_keys:
        key = one_off_key = secrets.token_urlsafe(18)
        settings = CollectorSettings.from_env(None, write_keys={key: "demo"}, **overrides)
        kept = _keep_key(store, key)
        err.print(
            f"[yellow]no write keys configured: a generated key ({masked(key)}) writes to site "
            f"'demo'; it is in {kept} (readable by you only)[/]"
        )
    delivery: Delivery
    db = None
    saved = None
    live = None
    owner_of = None
    if kafka:
        from funnel.topics import TopicNames
        from stream_processors.topics import create_topics

        names = TopicNames(topic_prefix)
        create_topics(kafka, names, partitions)
        if workers > 1:
            err.print(f"collector → Kafka {kafka} ({names.events}), {workers} processes")
            err.print(f"collector on http://{host}:{port}")
            run_kafka_workers(
                host,
                port,
                workers,
                kafka=kafka,
                topic_prefix=topic_prefix,
                one_off_key=one_off_key,
                allowed_hosts=allowed_hosts,
            )
            return
        delivery = KafkaDelivery(
            kafka,
            events_topic=names.events,
            rejected_topic=names.rejected,
            ack_timeout_s=settings.ack_timeout_s,
        )
        err.print(f"collector → Kafka {kafka} ({names.events})")
    else:
        from dashboards.live import page
        from storage.chdb_store import ChdbStore
        from storage.gate import CommitGate
        from storage.reports.api import LiveReports
        from storage.reports.owner import store_directory
        from stream_processors.embedded import GatedPipeline

        config = _config(funnels_file, channels_file)
        db = _open_store(store, database)
        gate = CommitGate()
        saved = _saved_state(store, database, config)
        pipeline = GatedPipeline(db, config, gate, saved=saved)
        pipeline.flush()  # facts a crash left committed but not landed (the outbox)
        delivery = EmbeddedDelivery(pipeline)
        # This process owns the store (chDB: one process per directory), so it answers
        # reports for everyone: the API, the live page, and `funnel report` through them.
        # Reports on one thread of the engine: ingestion keeps the other cores (issue 19).
        reader = db.limited(1) if isinstance(db, ChdbStore) else db
        live = LiveReports(reader, config.funnels, gate, page=page())
        owner_of = store_directory(store)
        # The owner's read key, new at every start: `funnel report` finds it beside the
        # store (storage.reports.owner), a person pastes it into the live page's form.
        owner_key = secrets.token_urlsafe(24)
        kept = _keep_key(store, owner_key, READ_KEY_FILE)
        reads = {**settings.read_keys, key_digest(owner_key): ("*",)}
        settings = settings.model_copy(update={"read_keys": reads})
        err.print(f"collector → embedded store {store}")
        err.print(
            f"the live page and the report API need a read key: one of FUNNEL_READ_KEYS, or "
            f"this run's ({masked(owner_key)}) in {kept} (readable by you only)"
        )

    def listening(url: str) -> None:
        if live is not None:
            err.print(f"live page and report API on {url}/")
        else:
            err.print(f"collector on {url}")

    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=host, registry=registry)
        err.print(f"metrics on http://{host}:{metrics_port}/metrics (no key)")
    try:
        run(
            create_app(settings, delivery, live=live, registry=registry),
            host,
            port,
            owner_of=owner_of,
            database=database,
            on_listen=listening,
        )
    finally:
        if saved is not None:
            saved.close()
        if db is not None:
            db.close()


def _keep_key(store: str, key: str, name: str = "write-key") -> Path:
    """Write a generated key to a file only its owner reads (never to the terminal or a
    log): the store directory's ``name``, or in ``FUNNEL_STATE_DIR`` for a server store."""
    from storage.reports.owner import store_directory

    directory = store_directory(store) or Path(os.environ.get("FUNNEL_STATE_DIR") or ".funnel")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    path.chmod(0o600)
    return path
