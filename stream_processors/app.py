"""The Faust application (``funnel worker``): settings and the App, nothing else.

Topics, the state table and the agent live in :mod:`stream_processors.agents`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faust

from funnel.settings import DEFAULT_PARTITIONS
from funnel.topics import TopicNames

__all__ = ["WorkerSettings", "create_app", "run_worker"]


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker connects and what it reads (CLI flags / ``FUNNEL_*`` env)."""

    kafka: str
    partitions: int = DEFAULT_PARTITIONS
    web_port: int = 6066
    data_dir: Path = Path(".funnel-worker")
    funnels_file: Path | None = None
    channels_file: Path | None = None
    app_id: str = "funnel"
    topics: TopicNames = field(default_factory=TopicNames)
    status_timer_s: float = 30.0
    """How often the status timer turns expired conversion windows into ``dropped``."""
    hold_limit_s: float = 300.0
    """How long the person stage holds a customer's events for a device's history at most
    (it comes within a round trip; the limit is for a bug that loses it)."""
    session_timeout_s: float = 20.0
    """How long the group waits for a silent worker before it gives the worker's partitions
    to the others: after a crash, its partitions stall this long (Faust's default is 60 s).
    Heartbeats go every third of it, at most every 3 s; the broker accepts 6 s at least."""


def create_app(settings: WorkerSettings) -> faust.App:
    """A Faust App with the funnel agent registered."""
    from funnel.leads import load_lead_rules
    from funnel.processor import CoreConfig
    from stream_processors import commits
    from stream_processors.agents import register

    commits.install()  # commit only over records the stages finished (see the module)

    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.split(",")],
        # Tables in memory, restored from their changelogs. Faust's RocksDB store was tried:
        # one two-worker run of tests/integration/stream_processors/test_kafka_pipeline.py
        # miscounted a person.
        store="memory://",
        datadir=str(settings.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # at_least_once, made exact by idempotence (stream_processors.agents): Faust's
        # exactly_once mode crashes on rebalance (faust-streaming #323).
        processing_guarantee="at_least_once",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        autodiscover=False,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    )
    config = CoreConfig.from_files(
        settings.funnels_file, settings.channels_file, leads=load_lead_rules()
    )  # the lead rules of FUNNEL_LEADS (`funnel --leads` sets it), else the defaults
    register(
        app,
        settings.topics,
        config,
        timer_interval_s=settings.status_timer_s,
        hold_limit_s=settings.hold_limit_s,
    )
    return app


def run_worker(settings: WorkerSettings, *, loglevel: str = "warning") -> None:
    """Run a worker until it is stopped (SIGINT/SIGTERM); blocks."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
