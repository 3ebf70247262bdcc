"""``funnel dev``: development services (the local Kafka broker)."""

from __future__ import annotations

from pathlib import Path

import click

from funnel.cli.root import (
    main,
)


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
    from devtools.kafka_broker import serve_forever

    serve_forever(port, data_dir)
