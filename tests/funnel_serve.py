"""``funnel serve`` as a user runs it: a subprocess owning an embedded store, on a free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from producers.messiness import Arrival

OWNER = "owner.json"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen[bytes]
    store: Path

    @property
    def read_key(self) -> str:
        """The read key this run of ``funnel serve`` made up (beside its owner file)."""
        return (self.store / "read-key").read_text("utf-8").strip()

    def request(self, path: str) -> urllib.request.Request:
        """A GET of ``path`` with the read key."""
        headers = {"Authorization": f"Bearer {self.read_key}"}
        return urllib.request.Request(self.url + path, headers=headers)

    def get(self, path: str) -> object:
        with _NO_PROXY.open(self.request(path), timeout=120) as response:
            return json.loads(response.read())

    def get_text(self, path: str) -> str:
        with _NO_PROXY.open(self.request(path), timeout=120) as response:
            return str(response.read().decode())

    def live(self) -> dict[str, object]:
        body = self.get("/api/live")
        assert isinstance(body, dict)
        return body


@contextmanager
def funnel_serve(store: Path, write_keys: str, log: Path) -> Iterator[Served]:
    """Start ``funnel serve --port 0`` on ``store``; yield once its owner file names it and its
    API answers; stop it (SIGTERM) and check it removed the owner file."""
    served = start_serve(store, write_keys, log)
    try:
        yield served
    finally:
        served.process.terminate()
        served.process.wait(timeout=60)
    assert not (store / OWNER).exists(), "funnel serve left its owner file behind"


def start_serve(store: Path, write_keys: str, log: Path) -> Served:
    """``funnel serve --port 0`` on ``store``, once its owner file names it (the caller stops
    it); its output is appended to ``log``."""
    env = {**os.environ, "FUNNEL_WRITE_KEYS": write_keys}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "funnel.cli",
                "serve",
                "--port",
                "0",
                "--store",
                f"chdb://{store}",
            ],
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        return Served(_wait_for_owner(store, process, log), process, store)
    except BaseException:
        process.kill()
        process.wait(timeout=60)
        raise


def _wait_for_owner(store: Path, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 120  # chDB's first start takes a few seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"funnel serve exited: {log.read_text('utf-8', 'replace')}")
        try:
            owner = json.loads((store / OWNER).read_text("utf-8"))
        except (OSError, ValueError):
            owner = None
        if owner and owner["pid"] == process.pid:
            return str(owner["url"])
        time.sleep(0.1)  # polling for a file to appear, with a deadline
    raise RuntimeError("funnel serve did not announce itself in time")


def split_people(stream: list[Arrival], share: float) -> tuple[list[Arrival], list[Arrival]]:
    """The arrivals of the first ``share`` of devices, and the rest; each in arrival order
    (so every device's events stay in their order within one part)."""
    devices = list(dict.fromkeys(str(a.payload.get("anonymous_id", "")) for a in stream))
    first = set(devices[: int(len(devices) * share)])
    return (
        [a for a in stream if str(a.payload.get("anonymous_id", "")) in first],
        [a for a in stream if str(a.payload.get("anonymous_id", "")) not in first],
    )


def wait_until(condition: object, *, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true (a state to wait for, with a deadline)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
