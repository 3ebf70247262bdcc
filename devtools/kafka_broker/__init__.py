"""A real single-node Apache Kafka broker for development and tests.

The broker is Apache Kafka itself (``kafka.Kafka`` from the ``org.apache.kafka:kafka_2.13`` jars
on Maven Central), run in KRaft combined mode (one JVM is both broker and controller) with Java.
Nothing is mocked: clients talk to it over TCP exactly as they would to a production cluster.

Contracts:

* :func:`ensure_jars` fetches the broker's runtime classpath once with Maven into a cache
  directory and reuses it afterwards. A fetch is complete only when its marker file exists, so an
  interrupted fetch is redone, never half-used.
* :class:`KafkaBroker` formats storage, launches the JVM in its own process group, and returns
  from :meth:`KafkaBroker.start` only once a real client request (``DescribeCluster``) has been
  answered with this broker registered and unfenced. :meth:`KafkaBroker.stop` is idempotent and
  always reaps the JVM (SIGTERM, then SIGKILL); it is also registered with :mod:`atexit`, and on
  Linux the JVM gets SIGTERM if the process that started it dies.
* The broker is configured so that idempotent producers, transactions and consumer groups work
  on one node (every internal topic has replication factor 1 and min ISR 1).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
import warnings
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final, Self

__all__ = [
    "KAFKA_VERSION",
    "JarFetchError",
    "KafkaBroker",
    "KafkaBrokerError",
    "ensure_jars",
    "serve_forever",
    "stop_group",
]

KAFKA_VERSION: Final = "4.4.0"
"""The Apache Kafka release the dev broker runs (the newest that resolves on Maven Central here)."""

POM_PATH: Final = Path(__file__).with_name("kafka_broker.pom.xml")
"""The pom whose runtime dependencies are the broker's classpath."""

MARKER_NAME: Final = ".funnel-jars-complete"
"""Written into a jar directory after a successful fetch; its absence means "fetch again"."""

JVM_OPTIONS: Final[tuple[str, ...]] = (
    "-Xms64m",
    "-Xmx512m",
    # Measured on the 2-CPU dev box (median start-to-ready of 3 runs, no CDS): G1+C2 (the JVM
    # default) 4.2s, serial GC 4.0s, serial GC + C1 only 3.5s; 5000 acks=all produce+consume
    # took the same 1.4s either way. A dev broker needs neither G1's pauses nor C2's peak.
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
"""Options for every JVM this module launches (broker and storage tool)."""

CDS_ENV: Final = "FUNNEL_KAFKA_CDS"
"""Set to ``0`` to run without the class-data-sharing archive (see :func:`_cds_archive`)."""

MAVEN_TIMEOUT_S: Final = 900.0
STOP_TIMEOUT_S: Final = 20.0
_PORT_RETRIES: Final = 3

_LOG4J2_PROPERTIES: Final = """\
# Written by devtools/kafka_broker: everything to stdout, which goes to the log file.
status = warn
# Kafka logs its own shutdown; log4j's hook would stop the logging halfway through it.
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel$
logger.channel.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a process started as the leader of its own group (``start_new_session``):
    SIGTERM to the group, wait ``timeout``, then SIGKILL. Returns once it has exited."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class KafkaBrokerError(RuntimeError):
    """The dev broker could not be provisioned, started or stopped."""


class JarFetchError(KafkaBrokerError):
    """Maven or Java is missing, or Maven could not fetch the broker's jars."""


# --------------------------------------------------------------------------------------------
# Jars


def default_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """``$FUNNEL_CACHE_DIR/kafka-<version>``, else ``~/.cache/funnel/kafka-<version>``."""
    root = os.environ.get("FUNNEL_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "funnel"
    return base / f"kafka-{version}"


def _jars_complete(directory: Path) -> bool:
    marker = directory / MARKER_NAME
    if not marker.is_file():
        return False
    names = [n for n in marker.read_text(encoding="utf-8").splitlines() if n.strip()]
    return bool(names) and all((directory / n).is_file() for n in names)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def ensure_jars(cache_dir: Path | None = None, *, version: str = KAFKA_VERSION) -> Path:
    """Return a directory holding every runtime jar of Apache Kafka ``version``.

    ``cache_dir`` is the jar directory itself (default :func:`default_cache_dir`). If it holds a
    complete fetch (marker present and every listed jar on disk) it is returned as is; otherwise
    the jars are fetched with ``mvn dependency:copy-dependencies`` (using :data:`POM_PATH`) into
    a temporary sibling directory which is renamed into place once complete, so readers never
    see a partial directory. Concurrent callers are serialised by a lock file.

    Raises :class:`JarFetchError` if ``mvn`` is not on ``PATH`` or Maven fails (the message
    carries the tail of Maven's output).
    """
    target = (cache_dir or default_cache_dir(version)).expanduser().resolve()
    if _jars_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_complete(target):  # another process finished while we waited
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise JarFetchError(
                "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka broker jars "
                f"into {target} (Debian: apt-get install maven)."
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            cmd = [
                mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM_PATH),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=MAVEN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = exc.output if isinstance(exc.output, str) else ""
                raise JarFetchError(
                    f"Maven did not fetch the Kafka {version} jars within {MAVEN_TIMEOUT_S:.0f}s."
                    f"\n{_tail(out)}"
                ) from exc
            jars = sorted(p.name for p in staging.glob("*.jar"))
            if done.returncode != 0 or not any(n.startswith("kafka_") for n in jars):
                raise JarFetchError(
                    f"Maven failed to fetch the Kafka {version} jars (exit {done.returncode}): "
                    f"{' '.join(cmd)}\n{_tail(done.stdout)}"
                )
            (staging / MARKER_NAME).write_text("\n".join(jars) + "\n", encoding="utf-8")
            if target.exists():  # an interrupted or corrupted earlier fetch
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# Broker


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    """A random KRaft cluster id (22 characters: a URL-safe base64 UUID, as the tool makes).

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``: the storage tool's
    argument parser would take it for an option (seen: "expected one argument").
    """
    while True:
        candidate = urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def server_properties(
    *, port: int, controller_port: int, log_dirs: Path, node_id: int = 1
) -> dict[str, str]:
    """The ``server.properties`` of a single combined broker+controller node on 127.0.0.1.

    The quorum is static (``controller.quorum.voters``), so the controller port may change
    between restarts of a persistent data directory.
    """
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # One node: every internal topic must fit on it.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Kafka's default: a new group waits 3 s for more members, so workers started together
        # share the first generation. With 0, the first worker takes every partition and
        # hands some over seconds later, before its first offset commit; faust-streaming
        # 0.15 then sometimes never consumes a partition handed over uncommitted.
        "group.initial.rebalance.delay.ms": "3000",
        # A small dev box: fewer threads, a quick shutdown.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
    }


def _write_properties(path: Path, props: dict[str, str]) -> None:
    body = "".join(f"{k}={v}\n" for k, v in props.items())
    path.write_text("# Written by devtools/kafka_broker\n" + body, encoding="utf-8")


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child after fork
    """Ask Linux to SIGTERM this child when the thread that forked it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


def _cds_archive(java: str, jars: Path) -> Path | None:
    """Where the AppCDS archive of ``java`` with the classpath ``jars/*`` lives, or ``None``.

    A dynamic class-data-sharing archive (``-XX:ArchiveClassesAtExit``) of a broker run cuts
    JVM startup from ~3.5s to ~2s here. The first broker that finds none writes one when it
    stops (which costs a few seconds, once); later ones map it. The JVM itself validates the
    archive (its own build, jar sizes and mtimes) and ignores a stale one with a warning, on
    which we delete it. ``None`` when disabled with ``FUNNEL_KAFKA_CDS=0`` or when the jar
    directory is read-only.
    """
    if os.environ.get(CDS_ENV, "1") == "0" or not os.access(jars, os.W_OK):
        return None
    real = Path(java).resolve()
    try:
        st = real.stat()
    except OSError:
        return None
    key = f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0{jars}"
    return jars / f"cds-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def _read_tail(path: Path, lines: int = 60) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return _tail(f.read().decode("utf-8", "replace"), lines)
    except OSError:
        return "(no log)"


def _probe(bootstrap: str, timeout: float) -> str | None:
    """Ask the broker ``DescribeCluster``; ``None`` if it lists an unfenced broker, else why not."""
    with warnings.catch_warnings():
        # kafka-python 3.0 loads its schemas with deprecated importlib.resources calls; a test
        # suite running with -W error must not fail here. Lazy: importing it costs ~0.2s.
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.admin import KafkaAdminClient

    ms = max(500, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="funnel-dev-broker-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=200,
        )
    except Exception as exc:  # any client failure means "not serving yet"
        return f"{type(exc).__name__}: {exc}"
    try:
        cluster = admin.describe_cluster()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()
    if any(not b.get("is_fenced", False) for b in cluster.get("brokers", [])):
        return None
    return f"no unfenced broker yet: {cluster.get('brokers')}"


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


def _port_bindable(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:``port`` now (SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------
# CLI


class _StopRequest:
    """Turns SIGINT/SIGTERM into a clean stop (see :func:`_stop_signals`)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.armed = False  # False: a signal aborts the start in progress

    def handle(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.armed:
            raise KeyboardInterrupt  # unwinds start(), whose cleanup kills Maven or the JVM
        self.event.set()


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopRequest]:
    """Within the block, SIGINT and SIGTERM go to a :class:`_StopRequest` (restored after)."""
    request = _StopRequest()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in handled}
    for s in handled:
        signal.signal(s, request.handle)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def serve_forever(port: int | None, data_dir: Path | None) -> None:
    """Run a broker in the foreground until Ctrl-C or SIGTERM, then stop it cleanly.

    Prints ``Kafka broker ready at 127.0.0.1:PORT`` and ``export FUNNEL_KAFKA=127.0.0.1:PORT``
    once it serves. Ctrl-C or SIGTERM while it starts aborts the start and returns; once it
    serves they stop it and return. Raises :class:`KafkaBrokerError` if it fails to start or
    dies on its own. Must run in the main thread (it installs signal handlers).
    """
    broker = KafkaBroker(port=port, data_dir=data_dir)
    with _stop_signals() as request:
        print(f"Starting Apache Kafka {KAFKA_VERSION} (KRaft, single node)...", flush=True)
        started = time.monotonic()
        try:
            bootstrap = broker.start()
            request.armed = True
            print(
                f"Kafka broker ready at {bootstrap} "
                f"(in {time.monotonic() - started:.1f}s; log: {broker.log_file})\n"
                f"export FUNNEL_KAFKA={bootstrap}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            while not request.event.wait(0.5):
                if not broker.is_running():
                    raise KafkaBrokerError(
                        f"the Kafka broker exited unexpectedly\n{broker.log_excerpt()}"
                    )
        except KeyboardInterrupt:
            print("Interrupted.", flush=True)
        finally:
            request.armed = True  # a second Ctrl-C must not interrupt the clean stop
            if broker.pid is not None:
                print("Stopping the Kafka broker...", flush=True)
            broker.stop()
            print("Kafka broker stopped.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.kafka_broker [--port N] [--data-dir DIR] [--fetch-only]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--fetch-only", action="store_true", help="only fetch the jars")
    args = parser.parse_args(argv)
    try:
        if args.fetch_only:
            print(ensure_jars())
        else:
            serve_forever(args.port, args.data_dir)
    except KafkaBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
