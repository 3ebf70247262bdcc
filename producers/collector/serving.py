"""Run the collector under uvicorn, announcing the owner of an embedded store while it listens.

``owner.json`` (:mod:`storage.reports.owner`) appears once the socket accepts connections —
so a ``funnel report`` that reads it can connect — and goes before the server stops
accepting, and again (idempotently) when :func:`run` returns however it ends. A killed
process leaves the file behind; readers ignore it (its pid is gone).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from storage.reports.owner import Owner, remove_owner, write_owner

__all__ = ["kafka_app", "run", "run_kafka_workers"]


class _OwnerServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        directory: Path | None,
        database: str,
        on_listen: Callable[[str], None] | None,
    ) -> None:
        super().__init__(config)
        self.directory, self.database, self.on_listen = directory, database, on_listen

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{_reachable(host)}:{port}"
        if self.directory is not None:
            write_owner(self.directory, Owner(url=url, pid=os.getpid(), database=self.database))
        if self.on_listen is not None:
            self.on_listen(url)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.directory is not None:
            remove_owner(self.directory)
        await super().shutdown(sockets)


def _reachable(host: str) -> str:
    """An address a local client can connect to (not the wildcard), bracketed if IPv6."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{host}]" if address.version == 6 else host


def run(
    app: Any,
    host: str,
    port: int,
    *,
    owner_of: Path | None = None,
    database: str = "",
    on_listen: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` (``0``: a free port) until interrupted (SIGINT/SIGTERM).

    With ``owner_of`` (an embedded store's directory), announce this process as its owner
    for ``database`` while it listens. ``on_listen`` gets the base URL once it listens. Blocks.
    """
    server = _OwnerServer(
        uvicorn.Config(app, host=host, port=port, log_level="warning"),
        owner_of,
        database,
        on_listen,
    )
    try:
        server.run()
    finally:
        if owner_of is not None:
            remove_owner(owner_of)


def kafka_app() -> Any:
    """The collector in Kafka mode, configured from the environment (``FUNNEL_KAFKA``,
    ``FUNNEL_TOPIC_PREFIX`` and what :meth:`CollectorSettings.from_env` reads): the app
    factory each process of :func:`run_kafka_workers` builds its own app and producer with
    (a producer's I/O thread does not survive a fork)."""
    from funnel.settings import DEFAULT_TOPIC_PREFIX
    from funnel.topics import TopicNames
    from producers.collector.app import create_app
    from producers.collector.delivery import KafkaDelivery
    from producers.collector.settings import CollectorSettings

    settings = CollectorSettings.from_env()
    names = TopicNames(os.environ.get("FUNNEL_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX))
    delivery = KafkaDelivery(
        os.environ["FUNNEL_KAFKA"],
        events_topic=names.events,
        rejected_topic=names.rejected,
        ack_timeout_s=settings.ack_timeout_s,
    )
    return create_app(settings, delivery)


def run_kafka_workers(
    host: str,
    port: int,
    workers: int,
    *,
    kafka: str,
    topic_prefix: str,
    one_off_key: str | None = None,
    allowed_hosts: str | None = None,
) -> None:
    """Serve the Kafka-mode collector from ``workers`` processes on one socket (uvicorn's
    supervisor: it binds the socket, starts the processes, restarts one that dies, and stops
    them on SIGINT/SIGTERM). The processes read their settings from the environment, as this
    one did; ``one_off_key`` (made up for site ``demo`` when none is configured) and the
    options given as flags are passed to them there. Blocks."""
    os.environ["FUNNEL_KAFKA"] = kafka
    os.environ["FUNNEL_TOPIC_PREFIX"] = topic_prefix
    if one_off_key is not None:
        os.environ["FUNNEL_WRITE_KEYS"] = f"{one_off_key}:demo"
    if allowed_hosts is not None:
        os.environ["FUNNEL_ALLOWED_HOSTS"] = allowed_hosts
    uvicorn.run(
        "producers.collector.serving:kafka_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
