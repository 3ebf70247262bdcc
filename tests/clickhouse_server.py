"""A private ClickHouse server process for tests (Debian's ``clickhouse-server``, 18.16 here).

:class:`ClickHouseServer` writes a minimal config into its own directory (data, tmp and log
paths there, free TCP and HTTP ports, listening on 127.0.0.1 only, no interserver port, no
system log tables, UTC), launches the server in its own process group and returns from
:meth:`~ClickHouseServer.start` only once a native-protocol client has had ``SELECT 1``
answered. :meth:`~ClickHouseServer.stop` is idempotent (SIGTERM, then SIGKILL) and keeps the
data directory, so :meth:`~ClickHouseServer.start` after it is a restart on the same port and
the same data. The server runs as whoever runs the tests, root included (CI): 18.16 neither
refuses root nor needs the ``clickhouse`` user when every path it writes is its own, as here.
"""

from __future__ import annotations

import atexit
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from devtools.kafka_broker import stop_group
from tests.servers import free_port

__all__ = ["ClickHouseServer", "ClickHouseServerError", "find_binary"]

START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0

_CONFIG: Final = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>information</level>
    <log>{root}/log/server.log</log>
    <errorlog>{root}/log/server.err.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <max_concurrent_queries>16</max_concurrent_queries>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
"""

_USERS: Final = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <!-- How long an idle connection's handler waits to notice a shutdown (default 10 s). -->
    <default><poll_interval>1</poll_interval></default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


class ClickHouseServerError(RuntimeError):
    """The server could not be found, started or stopped."""


def find_binary() -> list[str]:
    """The command that runs a ClickHouse server: Debian's ``clickhouse-server`` (in /usr/sbin,
    which a non-root PATH may lack) or the single ``clickhouse`` binary of newer releases."""
    for name in ("clickhouse-server", "/usr/sbin/clickhouse-server"):
        found = shutil.which(name)
        if found:
            return [found]
    single = shutil.which("clickhouse")
    if single:
        return [single, "server"]
    raise ClickHouseServerError("no clickhouse-server binary: sudo ./scripts/system-deps --install")


class ClickHouseServer:
    """One server process on a directory of its own; restartable on the same port and data.

    Not thread-safe beyond :meth:`stop`, which may be called from :mod:`atexit` too.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tcp_port = free_port()
        self.http_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "config.xml").write_text(
            _CONFIG.format(root=root, tcp_port=self.tcp_port, http_port=self.http_port)
        )
        (root / "users.xml").write_text(_USERS)

    @property
    def url(self) -> str:
        """A ``clickhouse://`` URL for :class:`storage.backends.ServerStore`."""
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/default"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Launch the server and return :attr:`url` once it answers a query."""
        with self._lock:
            if self.running:
                return self.url
            preexec: Callable[[], None] | None = None
            if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
                preexec = _die_with_parent  # PDEATHSIG fires when the forking *thread* exits
            with (self.root / "log" / "stdout.log").open("ab") as out:
                self._process = subprocess.Popen(
                    [*find_binary(), f"--config-file={self.root / 'config.xml'}"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                    cwd=self.root,
                )
            atexit.register(self.stop)
        self._wait_ready(time.monotonic() + timeout)
        return self.url

    def _wait_ready(self, deadline: float) -> None:
        from clickhouse_driver import Client, errors

        client = Client(host="127.0.0.1", port=self.tcp_port, connect_timeout=1)
        try:
            while True:
                process = self._process
                if process is None or process.poll() is not None:
                    code = None if process is None else process.returncode
                    raise ClickHouseServerError(f"server exited ({code})\n{self.log_excerpt()}")
                try:
                    # A bare TCP connect first: the driver logs a traceback per refused attempt.
                    socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
                    client.execute("SELECT 1")
                    return
                except (errors.NetworkError, errors.SocketTimeoutError, EOFError, OSError):
                    pass  # not listening (or not answering) yet: poll again
                if time.monotonic() > deadline:
                    self.stop()
                    raise ClickHouseServerError(f"server not ready\n{self.log_excerpt()}")
                time.sleep(0.02)
        finally:
            client.disconnect()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server (idempotent): SIGTERM to its group, SIGKILL after ``timeout``.

        The data directory stays, so :meth:`start` afterwards restarts on the same data.
        """
        with self._lock:
            process, self._process = self._process, None
            if process is None:
                return
            stop_group(process, timeout)
            atexit.unregister(self.stop)

    def restart(self, timeout: float = START_TIMEOUT_S) -> str:
        self.stop()
        return self.start(timeout)

    def log_excerpt(self, limit: int = 4000) -> str:
        """The end of the server's error log and stdout, for failure messages."""
        parts = []
        for name in ("server.err.log", "stdout.log"):
            path = self.root / "log" / name
            if path.is_file():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(parts)


def _die_with_parent() -> None:
    # SIGTERM the server if the test process dies without running its finalizers.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
