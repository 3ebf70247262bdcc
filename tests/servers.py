"""Real HTTP servers on loopback for tests: an ASGI app under uvicorn, static files."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_asgi(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread; yield its base URL; stop it on exit."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # a condition to wait for, with a deadline
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve_directory(directory: Path, port: int = 0) -> Iterator[str]:
    """Serve ``directory`` over HTTP on loopback; yield the base URL."""
    with serve_handler(functools.partial(_QuietHandler, directory=str(directory)), port) as url:
        yield url


@contextmanager
def serve_handler(handler: Any, port: int = 0) -> Iterator[str]:
    """Serve ``handler`` (an ``http.server`` request handler) on loopback in a thread; yield
    the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


#: A read key of every site for the tests' collectors (their settings' ``read_keys``), and
#: the headers that present it.
READ_KEY = "read-key-of-the-tests"
READ_KEYS = {READ_KEY: "*"}
READ_HEADERS = {"Authorization": f"Bearer {READ_KEY}"}


def read_client(app: Any) -> Any:
    """A Starlette ``TestClient`` of ``app`` whose every request carries :data:`READ_KEY`."""
    from starlette.testclient import TestClient

    return TestClient(app, headers=READ_HEADERS)
