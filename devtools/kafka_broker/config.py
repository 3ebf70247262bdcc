"""What the broker's JVM is given: its options, ``server.properties``, log4j and CDS archive."""

from __future__ import annotations

import hashlib
import os
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Final

__all__ = ["CDS_ENV", "JVM_OPTIONS", "server_properties"]

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
