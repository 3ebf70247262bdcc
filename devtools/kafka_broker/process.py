"""Processes and ports: stopping a process group, free and open ports, the readiness probe."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import warnings
from pathlib import Path

from devtools.kafka_broker.jars import _tail

__all__ = ["stop_group"]


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child after fork
    """Ask Linux to SIGTERM this child when the thread that forked it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


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
