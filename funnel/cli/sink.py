"""``funnel sink``: facts topics → ClickHouse, each fact once."""

from __future__ import annotations

import click

from funnel.cli.root import (
    _open_store,
    database_option,
    kafka_option,
    main,
    prefix_option,
    store_option,
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
