"""Issue 14: ``funnel serve`` killed (-9) in the middle of simulated HTTP traffic, restarted,
and the clients retry. Embedded state is durable (DESIGN §9a): the tables equal the
simulator's ground truth — nothing twice, nothing lost, progress continues."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from funnel.funnels import FunnelCatalog
from producers.messiness import Arrival, Mess, arrivals
from producers.replay import batches
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.reports import stage_counts
from tests.funnel_serve import Served, start_serve, wait_until

SITE = "killed"
KEY = "kill-key"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Client:
    """Sends the batches in order; a batch is retried (to whichever server is up) until a
    2xx answers it, as a tracker or SDK does."""

    def __init__(self, stream: list[Arrival]) -> None:
        self.batches = list(batches(stream, 20))
        self.url = ""
        self.answered = 0
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for batch in self.batches:
                while not self._post(batch):
                    self.retries += 1
                self.answered += 1
        except BaseException as exc:
            self.error = exc

    def _post(self, batch: list[Arrival]) -> bool:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        items = [
            {**a.payload, "sent_at": now} if "sent_at" in a.payload else a.payload for a in batch
        ]
        request = urllib.request.Request(
            self.url + "/v1/batch",
            data=gzip.compress(json.dumps(items).encode()),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "X-Funnel-Key": KEY,
                "User-Agent": batch[0].user_agent,  # else the collector flags a bot
            },
        )
        try:
            with _NO_PROXY.open(request, timeout=30) as response:
                return 200 <= response.status < 300
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503):
                raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # the server is down: retry, to the restarted one
        threading.Event().wait(0.05)  # a client's back-off before its retry
        return False


def test_serve_killed_mid_traffic_restarts_where_it_stopped(tmp_path: Path) -> None:
    sim = simulate(400, seed=14, site_id=SITE)
    stream = arrivals(sim.events, Mess(duplicates=0.05), seed=14)
    stream.sort(key=lambda a: (str(a.payload.get("anonymous_id", "")), a.payload.get("seq", 0)))
    store = tmp_path / "store"
    log = tmp_path / "serve.log"
    client = Client(stream)
    first = start_serve(store, f"{KEY}:{SITE}", log)
    client.url = first.url
    sender = threading.Thread(target=client.run, daemon=True)
    sender.start()
    second: Served | None = None
    try:
        wait_until(lambda: client.answered >= len(client.batches) // 3, what="a third sent")
        first.process.kill()  # SIGKILL: no shutdown, whatever was in flight
        first.process.wait(timeout=60)
        second = start_serve(store, f"{KEY}:{SITE}", log)
        client.url = second.url
        sender.join(timeout=600)
        assert not sender.is_alive()
        assert client.error is None, client.error
    finally:
        for served in (first, second):
            if served is not None and served.process.poll() is None:
                served.process.terminate()
                served.process.wait(timeout=60)

    # This process has the session's chDB engine open (one per process): audit in another.
    audit = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import audit; audit({str(store)!r})"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found = json.loads(audit.stdout)
    assert set(found["events"]) == {e.event_id for e in sim.events}
    assert {k: n for k, n in found["events"].items() if n != 1} == {}
    assert found["twice"] == []
    assert found["credits"] == []
    for spec in FunnelCatalog.default().specs:
        assert found["stages"][spec.name] == sim.truth.step_counts(spec.name), spec.name


def audit(path: str) -> None:
    """Print what the store holds (run in a process of its own)."""
    engine = ChdbStore(path)
    try:
        db = engine.database
        counted = engine.query(f"SELECT event_id, count() AS n FROM {db}.events GROUP BY event_id")
        twice = engine.query(
            f"SELECT person_id, funnel, step_index, sum(sign) AS n FROM {db}.stage_reached "
            "GROUP BY person_id, funnel, step_index HAVING n NOT IN (0, 1)"
        )
        credits = engine.query(
            f"SELECT conversion_id, model, sum(credit) AS c FROM {db}.attributions "
            "GROUP BY conversion_id, model HAVING abs(c - 1) > 1e-6"
        )
        stages = {
            spec.name: stage_counts(engine, spec, SITE) for spec in FunnelCatalog.default().specs
        }
    finally:
        engine.close()
    found = {
        "events": {r["event_id"]: int(r["n"]) for r in counted},
        "twice": twice,
        "credits": credits,
        "stages": stages,
    }
    print(json.dumps(found, default=str))
