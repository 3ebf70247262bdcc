"""The :class:`KafkaBroker`: one Apache Kafka JVM in KRaft combined mode on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final, Self

from devtools.kafka_broker.config import (
    _LOG4J2_PROPERTIES,
    JVM_OPTIONS,
    _cds_archive,
    _cluster_id,
    _write_properties,
    server_properties,
)
from devtools.kafka_broker.errors import JarFetchError, KafkaBrokerError
from devtools.kafka_broker.jars import KAFKA_VERSION, ensure_jars
from devtools.kafka_broker.process import (
    _free_port,
    _port_bindable,
    _port_open,
    _probe,
    _read_tail,
    _set_parent_death_signal,
    stop_group,
)

__all__ = ["STOP_TIMEOUT_S", "KafkaBroker"]

STOP_TIMEOUT_S: Final = 20.0
_PORT_RETRIES: Final = 3


class KafkaBroker:
    """One Apache Kafka JVM in KRaft combined mode on 127.0.0.1, usable as a context manager.

    ``port``: the PLAINTEXT port (default: a free one, as is the controller port).
    ``data_dir``: where ``server.properties``, the log file and the partitions live; it is kept
    (and reused across restarts) when given, and is a temporary directory removed by
    :meth:`stop` when not. ``jars_dir``: the classpath (default: :func:`ensure_jars`).
    ``log_file``: the JVM's stdout and stderr (default ``<data_dir>/kafka.log``).
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        jars_dir: Path | None = None,
        log_file: Path | None = None,
    ) -> None:
        self._requested_port = port
        self._requested_data_dir = data_dir
        self._jars_dir = jars_dir
        self._requested_log_file = log_file
        self._port: int | None = None
        self._data_dir: Path | None = None
        self._owns_data_dir = False
        self._log_file: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._log_offset = 0
        self._cds_dump: tuple[Path, Path] | None = None  # (temporary, final) archive
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``; raises :class:`KafkaBrokerError` unless the broker is started."""
        if self._port is None or self._process is None:
            raise KafkaBrokerError("the broker is not running; call start() first")
        return f"127.0.0.1:{self._port}"

    @property
    def data_dir(self) -> Path | None:
        """The data directory in use (``None`` before :meth:`start`)."""
        return self._data_dir

    @property
    def log_file(self) -> Path | None:
        """The JVM's log file (``None`` before :meth:`start`)."""
        return self._log_file

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """Whether the JVM process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> str:
        """Start the broker and return its bootstrap address once it serves client requests.

        Idempotent while running. Raises :class:`KafkaBrokerError` (with the log tail) if the
        JVM exits or ``timeout`` seconds pass first; nothing is left running in that case.
        """
        with self._lock:
            if self._process is not None:
                return self.bootstrap_servers
            deadline = time.monotonic() + timeout
            java = shutil.which("java")
            if java is None:
                raise JarFetchError("Java ('java', 17 or newer) is not on PATH; Kafka needs it.")
            jars = (self._jars_dir or ensure_jars()).resolve()
            if not any(jars.glob("kafka_*.jar")):
                raise KafkaBrokerError(f"{jars} holds no Kafka broker jar (kafka_*.jar)")
            if self._requested_data_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="funnel-kafka-"))
                self._owns_data_dir = True
            else:
                self._data_dir = self._requested_data_dir.expanduser().resolve()
                self._data_dir.mkdir(parents=True, exist_ok=True)
                self._owns_data_dir = False
            self._log_file = self._requested_log_file or self._data_dir / "kafka.log"
            atexit.register(self.stop)
            try:
                for attempt in range(1, _PORT_RETRIES + 1):
                    try:
                        self._launch(java, jars, deadline)
                        break
                    except _PortTakenError:
                        # The controller port (and the broker port unless requested) was picked
                        # free but taken before the JVM bound it: pick again.
                        self._kill()
                        if attempt == _PORT_RETRIES:
                            raise
            except BaseException:
                self._stop_locked()
                raise
            return self.bootstrap_servers

    def _launch(self, java: str, jars: Path, deadline: float) -> None:
        assert self._data_dir is not None
        assert self._log_file is not None
        if self._requested_port is not None and not _port_bindable(self._requested_port):
            raise KafkaBrokerError(f"port {self._requested_port} is already in use on 127.0.0.1")
        self._port = self._requested_port or _free_port()
        controller_port = _free_port()
        while controller_port == self._port:
            controller_port = _free_port()
        props_path = self._data_dir / "server.properties"
        _write_properties(
            props_path,
            server_properties(
                port=self._port,
                controller_port=controller_port,
                log_dirs=self._data_dir / "kraft-logs",
            ),
        )
        log4j = self._data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2_PROPERTIES, encoding="utf-8")
        base = [
            java,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self._data_dir}",
            "-cp",
            f"{jars}/*",
        ]
        cds = _cds_archive(java, jars)
        broker_cmd = base.copy()
        if cds is not None and cds.is_file():
            base.insert(1, f"-XX:SharedArchiveFile={cds}")
            broker_cmd = base.copy()
        elif cds is not None:
            partial = cds.with_name(f".{cds.name}.{os.getpid()}-{id(self):x}.partial")
            broker_cmd.insert(1, f"-XX:ArchiveClassesAtExit={partial}")
            self._cds_dump = (partial, cds)
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        with self._log_file.open("ab") as log:
            launched_at = self._log_offset = log.tell()
            if not (self._data_dir / "kraft-logs" / "meta.properties").is_file():
                self._format_storage(base, props_path, log, deadline)
            preexec: Callable[[], None] | None = None
            if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
                # PR_SET_PDEATHSIG fires when the forking *thread* exits, so only from main.
                preexec = _set_parent_death_signal
            cmd = [*broker_cmd, "kafka.Kafka", str(props_path)]
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                cwd=self._data_dir,
            )
        self._wait_ready(deadline)
        self._ready = True
        if cds is not None and cds.is_file() and self._cds_rejected(launched_at):
            cds.unlink(missing_ok=True)  # stale (new JDK or jars): the next broker rebuilds it

    def _cds_rejected(self, offset: int) -> bool:
        assert self._log_file is not None
        with self._log_file.open("rb") as f:
            f.seek(offset)
            head = f.read(256 * 1024).decode("utf-8", "replace")
        return "Unable to use shared archive" in head or "[error][cds" in head

    def _format_storage(
        self, base: list[str], props: Path, log: IO[bytes], deadline: float
    ) -> None:
        """Format a new log directory (a formatted one is reused as is, with its cluster id)."""
        cmd = [
            *base, "kafka.tools.StorageTool", "format",
            "-t", _cluster_id(), "-c", str(props),
        ]  # fmt: skip
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            rc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
                start_new_session=True,
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise KafkaBrokerError(
                f"formatting Kafka storage timed out\n{self.log_excerpt()}"
            ) from exc
        if rc != 0:
            raise KafkaBrokerError(
                f"formatting Kafka storage failed (exit {rc})\n{self.log_excerpt()}"
            )

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        assert self._port is not None
        bootstrap = f"127.0.0.1:{self._port}"
        why = "the port is not open yet"
        while True:
            code = self._process.poll()
            if code is not None:
                bind = _BIND_FAILURE.search(self._log_since_launch())
                if bind is not None and int(bind.group(1)) != self._requested_port:
                    raise _PortTakenError(f"port {bind.group(1)} was taken before Kafka bound it")
                if bind is not None:
                    raise KafkaBrokerError(
                        f"port {self._requested_port} is already in use\n{self.log_excerpt()}"
                    )
                raise KafkaBrokerError(
                    f"the Kafka broker exited with code {code} during startup\n{self.log_excerpt()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaBrokerError(
                    f"the Kafka broker did not serve {bootstrap} within the timeout "
                    f"(last check: {why})\n{self.log_excerpt()}"
                )
            if _port_open(self._port):
                probed = _probe(bootstrap, min(left, 5.0))
                if probed is None:
                    return
                why = probed
            time.sleep(0.1)

    def _log_since_launch(self, limit: int = 4 * 1024 * 1024) -> str:
        if self._log_file is None:
            return ""
        try:
            with self._log_file.open("rb") as f:
                f.seek(self._log_offset)
                return f.read(limit).decode("utf-8", "replace")
        except OSError:
            return ""

    def log_excerpt(self, tail: int = 30) -> str:
        """For error messages: the log's first error lines since the last launch, then its tail."""
        key: list[str] = []
        for line in self._log_since_launch().splitlines():
            if _KEY_LINE.search(line) and line not in key:
                key.append(line)
                if len(key) == 12:
                    break
        where = f"log: {self._log_file}"
        last = _read_tail(self._log_file, tail) if self._log_file else "(no log)"
        if not key:
            return f"{where}\n--- log tail ---\n{last}"
        errors = "\n".join(key)
        return f"{where}\n--- errors ---\n{errors}\n--- log tail ---\n{last}"

    def _kill(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Terminate the JVM's process group: SIGTERM, wait ``timeout``, then SIGKILL."""
        process, self._process = self._process, None
        ready, self._ready = self._ready, False
        dump, self._cds_dump = self._cds_dump, None
        if process is None:
            return
        stop_group(process, timeout)
        # Anything the JVM spawned into its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if dump is not None:
            partial, final = dump
            # Keep the archive only from a broker that served and exited on its own terms
            # (Java exits 143 on SIGTERM); a SIGKILLed JVM may have left it half written.
            if ready and process.returncode >= 0 and partial.is_file():
                os.replace(partial, final)
            partial.unlink(missing_ok=True)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker (idempotent) and remove the data directory if it was temporary."""
        with self._lock:
            self._stop_locked(timeout)

    def _stop_locked(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._kill(timeout)
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._owns_data_dir = False
        self._port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on 127.0.0.1:{self._port}" if self.is_running() else "stopped"
        return f"<KafkaBroker {KAFKA_VERSION} {state}>"


_BIND_FAILURE: Final = re.compile(r"failed to bind to [^\s:]+:(\d+)")
_KEY_LINE: Final = re.compile(r"\b(ERROR|FATAL)\b|Exception|^Caused by:|\[(error|warning)\]")


class _PortTakenError(KafkaBrokerError):
    """A freely picked port was taken before the JVM bound it (retried with new ports)."""
