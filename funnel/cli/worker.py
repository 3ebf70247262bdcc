"""``funnel worker``: the Faust worker (events topic → facts topics)."""

from __future__ import annotations

from pathlib import Path

import click

from funnel.cli.root import (
    channels_option,
    funnels_option,
    kafka_option,
    main,
    prefix_option,
)
from funnel.settings import (
    DEFAULT_PARTITIONS,
)


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
@click.option(
    "--session-timeout",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=6.0, max=300.0),
    help="Seconds the group waits for a silent worker (a crashed one) before its partitions "
    "go to the others.",
)
@click.option(
    "--hold-limit",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Seconds a customer's events wait at most for the history of a device just linked "
    "to them (it comes within a round trip; after this they go on without it). Counted in "
    "status ticks (--status-every), so that a backlog being read does not count.",
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
    session_timeout: float,
    hold_limit: float,
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
            session_timeout_s=session_timeout,
            hold_limit_s=hold_limit,
        ),
        loglevel=loglevel,
    )
