"""Ingestion latency of ``funnel serve`` (embedded) under a flood of reports, against the same
ingestion without one, measured in the same run (issue 19: reads never stall commits).

    python benchmarks/bench_read_flood.py [--seconds 20] [--readers 4] [--rate 40]

Starts ``funnel serve`` on a fresh chDB store, loads ``--persons`` simulated persons, then
runs two phases of ``--seconds`` each:

* ``quiet`` — one client posts 10-event batches at ``--rate`` requests per second;
* ``flood`` — the same, while ``--readers`` clients ask for reports as fast as they are
  answered, each request different (``lookback_days`` drawn at random, so no cache helps).

Each ingestion request's time to its 200 (the events durable in the store) is recorded; the
result gives p50/p99/max per phase, the flood's p99 over the quiet p99 (issue 19's goal:
at most 1.5), and how the reports were answered (200, 503 busy). Appends one JSON line to
``benchmarks/results/read_flood.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "read_flood.jsonl"
KEY, SITE = "bench-flood-key", "flood"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, headers={"X-Funnel-Key": KEY, "Content-Type": "application/json"}
    )
    with _HTTP.open(request, timeout=60) as answer:
        return int(answer.status)


def _get(url: str, key: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with _HTTP.open(request, timeout=120) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _batches(persons: int, seed: int) -> list[list[dict[str, object]]]:
    from producers.simulator import simulate

    events = simulate(persons, seed=seed, site_id=SITE).events
    items = [json.loads(e.model_dump_json(exclude_none=True)) for e in events]
    return [items[i : i + 10] for i in range(0, len(items), 10)]


def _fresh(batch: list[dict[str, object]]) -> bytes:
    """The batch with new event ids and new persons (nothing deduplicated, no replays)."""
    tag = uuid.uuid4().hex[:8]
    out = []
    for item in batch:
        copy = {**item, "event_id": str(uuid.uuid4())}
        for name in ("anonymous_id", "customer_id", "order_id"):
            if name in copy:
                copy[name] = f"{tag}-{copy[name]}"
        out.append(copy)
    return json.dumps(out).encode()


def _phase(
    base: str,
    key: str,
    batches: list[list[dict[str, object]]],
    args: argparse.Namespace,
    flood: bool,
) -> dict[str, object]:
    stop = threading.Event()
    reads: Counter[int] = Counter()
    lock = threading.Lock()

    def reader(n: int) -> None:
        rng = random.Random(n)
        while not stop.is_set():
            days = rng.randint(1, 3650)
            status = _get(f"{base}/api/reports/attribution?lookback_days={days}", key)
            with lock:
                reads[status] += 1

    threads = [
        threading.Thread(target=reader, args=(n,)) for n in range(args.readers if flood else 0)
    ]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    interval = 1 / args.rate
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < args.seconds:
        due = start + sent * interval
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)  # the load's own schedule (open loop), not a race
        body = _fresh(batches[sent % len(batches)])
        began = time.perf_counter()
        assert _post(f"{base}/v1/batch", body) == 200
        latencies.append((time.perf_counter() - began) * 1000)
        sent += 1
    stop.set()
    for thread in threads:
        thread.join()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(max(latencies), 1),
        "reports": dict(reads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=40.0, help="ingestion requests/s")
    parser.add_argument("--persons", type=int, default=3000, help="loaded before measuring")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.servers import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        store = Path(tmp) / "store"
        env = {**os.environ, "FUNNEL_WRITE_KEYS": f"{KEY}:{SITE}", "FUNNEL_RATE_LIMIT": "off"}
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "funnel.cli", "serve"),
                *("--port", str(port), "--store", f"chdb://{store}"),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with _HTTP.open(f"{base}/health", timeout=2):
                        break
                except OSError:
                    assert server.poll() is None, "funnel serve exited"
                    assert time.monotonic() < deadline, "funnel serve did not start"
                    time.sleep(0.2)  # waiting for a process to listen
            key = (store / "read-key").read_text().strip()
            batches = _batches(args.persons, seed=19)
            for batch in batches:  # the history the reports read
                _post(f"{base}/v1/batch", _fresh(batch))
            quiet = _phase(base, key, batches, args, flood=False)
            flood = _phase(base, key, batches, args, flood=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    ratio = round(float(flood["p99_ms"]) / float(quiet["p99_ms"]), 2)  # type: ignore[arg-type]
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bench": "read_flood",
        "settings": dict(vars(args)),
        "quiet": quiet,
        "flood": flood,
        "flood_p99_over_quiet_p99": ratio,
        "goal_at_most_1_5": ratio <= 1.5,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
