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

__all__ = ["run"]


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
