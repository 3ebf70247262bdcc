"""``funnel simulate``: a simulated population, to Kafka, over HTTP or in this process."""

from __future__ import annotations

from pathlib import Path

import click

from funnel.cli.root import (
    _config,
    _open_store,
    _progress,
    _require_kafka,
    database_option,
    err,
    main,
    prefix_option,
    store_option,
)
from funnel.settings import (
    DEFAULT_KAFKA,
    DEFAULT_PARTITIONS,
)


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
                try:
                    sent = send_inprocess(stream, pipeline, site, progress=advance)
                finally:
                    pipeline.close()  # before the store: no landing thread outlives it
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
