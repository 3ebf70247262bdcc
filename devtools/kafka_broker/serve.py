"""The command line: ``python -m devtools.kafka_broker`` and ``funnel dev``'s broker."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

from devtools.kafka_broker.broker import KafkaBroker
from devtools.kafka_broker.errors import KafkaBrokerError
from devtools.kafka_broker.jars import KAFKA_VERSION, ensure_jars

__all__ = ["main", "serve_forever"]


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
    import devtools.kafka_broker as package  # its docstring describes the command; lazy: a cycle

    doc = package.__doc__
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
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
