"""End-to-end freshness: collector → broker → worker → sink → chDB, at fixed offered loads.

    python -m benchmarks [--quick] [--rates 1000,2500,5000] [--seconds 60] [--workers 1]

Starts what a Kafka-mode deployment runs, each as its own process on this machine: one
Apache Kafka broker (:class:`~devtools.kafka_broker.KafkaBroker`), the collector (``funnel
serve --kafka``), ``--workers`` stream workers (``funnel worker``, one consumer group, 4
partitions) and the sink (``funnel sink`` into a chDB store). This process is the load
generator: tracker-like requests (``POST /v1/batch``, one device per request, its next 1-20
events, simulated journeys moved to end a minute ago, every event id fresh) on keep-alive
connections, paced to each offered rate of ``--rates`` for ``--seconds`` in turn.

Per step it reports:

* **freshness** — from the collector's receipt of an event (``received_at``) to its row in
  ClickHouse (``landed_at``, stamped by the store when the sink's insert runs; the insert
  returns, and the row is visible to queries, within ``funnel_sink_insert_seconds`` after):
  p50 / p99 / max over the step's events, exact, from the store after the run;
* **backlog** — accepted events not yet landed, sampled every second from the collector's
  answers and the sink's ``funnel_sink_rows_total{table="events"}``; a step is *sustained*
  when its backlog did not grow over the step's second half (by less than half a second of
  offered load), and the report names the highest sustained rate;
* **CPU per component** (cores, from /proc) — collector, workers, sink, broker, this load
  generator — and Kafka records per accepted event over the whole run (every topic of the
  run, the workers' changelogs included).

Between steps it waits until the backlog is landed, so a step starts empty. After the last
step every process is stopped and the store checked: each accepted event is in ``events``
exactly once. Writes ``benchmarks/results/e2e.json`` and ``benchmarks/results/e2e.md`` (the
last run; ``--quick`` writes ``e2e-quick.*``). ``--quick`` (three 30 s steps) finishes in
under 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench_collector import _cpu_seconds as process_cpu
from benchmarks.bench_collector import _free_port, read_answer
from benchmarks.bench_worker import _records as topic_records

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WRITE_KEY = "bench-e2e-key"
SITE = "bench"
PARTITIONS = 4
MAX_EVENTS_PER_REQUEST = 20
CONNECTIONS = 16
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
_SERVER_SET: dict[str, Any] = {  # the fields the collector sets itself
    "received_at": True,
    "context": {"ip", "browser", "os", "device", "is_bot", "clock_skew_ms", "clamped"},
}


# --------------------------------------------------------------------------------------------
# Traffic


def tracker_requests(events_needed: int, seed: int) -> list[tuple[int, bytes]]:
    """Request bodies in sending order, each with its event count: one device per request,
    that device's next 1-20 events, devices interleaved by the time of their first event."""
    from producers.simulator import simulate

    persons = max(1_000, int(events_needed / 2.0))
    events = simulate(persons, seed=seed, site_id=SITE).events
    # Move the simulated month so it ends a minute ago: realistic lateness, no clamping.
    shift = datetime.now(UTC) - timedelta(minutes=1) - max(e.occurred_at for e in events)
    rng = random.Random(seed)
    by_device: dict[str, list[bytes]] = {}
    first: dict[str, datetime] = {}
    for event in events:
        moved = event.model_copy(update={"occurred_at": event.occurred_at + shift})
        key = event.partition_key
        first.setdefault(key, moved.occurred_at)
        wire = moved.model_dump_json(exclude_none=True, exclude=_SERVER_SET).encode()
        by_device.setdefault(key, []).append(wire)
    chunks: list[tuple[datetime, int, int, bytes]] = []
    for key, wires in by_device.items():
        at = 0
        while at < len(wires):
            size = rng.randint(1, MAX_EVENTS_PER_REQUEST)
            part = wires[at : at + size]
            # A device's later requests go after its earlier ones (same first time, later n).
            chunks.append((first[key], at, len(part), b"[" + b",".join(part) + b"]"))
            at += size
    chunks.sort(key=lambda c: (c[0], c[1]))
    return [(n, body) for _, _, n, body in chunks]


@dataclass
class Tally:
    """What the load generator saw, cumulative."""

    accepted: int = 0
    offered: int = 0
    failed_requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def offer(
    port: int,
    requests: list[tuple[int, bytes]],
    start: int,
    rate: float,
    seconds: float,
    tally: Tally,
) -> int:
    """Send ``requests[start:]`` paced to ``rate`` events/s for ``seconds``; return the index
    of the first request not sent. A request is due when the events before it are."""
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Content-Type: application/json\r\nX-Funnel-Key: {WRITE_KEY}\r\n"
    ).encode()
    began = time.perf_counter()
    end = began + seconds
    state = {"next": start, "events": 0}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while state["next"] < len(requests):
                due = began + state["events"] / rate
                if due >= end:
                    return
                i = state["next"]
                state["next"] += 1
                count, body = requests[i]
                state["events"] += count
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tally.offered += count
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status, answer = await read_answer(reader)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    tally.accepted += int(json.loads(answer)["accepted"]) if answer else count
                else:
                    tally.failed_requests += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return int(state["next"])


# --------------------------------------------------------------------------------------------
# Processes


def _get(port: int, path: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
        return str(answer.read().decode())


def _metric(text: str, name: str, labels: str = "") -> float:
    """The sum of a Prometheus series' samples whose labels contain ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` (with its children, but for this process: the
    load generator's children are the components measured apart), or ``None``."""
    cpu = process_cpu(pid, children=pid != os.getpid())
    return sum(cpu) if cpu is not None else None


class Deployment:
    """The collector, the workers and the sink, as processes of ``funnel``."""

    def __init__(self, bootstrap: str, work: Path, workers: int) -> None:
        self.bootstrap, self.work = bootstrap, work
        self.prefix = f"e2e{uuid.uuid4().hex[:8]}."
        self.group = f"e2e-worker-{uuid.uuid4().hex[:8]}"
        self.store = work / "store"
        self.port = _free_port()
        self.sink_port = _free_port()
        path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
        self.env = {**os.environ, "FUNNEL_WRITE_KEYS": f"{WRITE_KEY}:{SITE}", "PYTHONPATH": path}
        self.env["FUNNEL_RATE_LIMIT"] = "off"  # one load generator, one address
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.worker_count = workers

    def _start(self, name: str, *args: str) -> None:
        log = (self.work / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "funnel.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> None:
        kafka = ("--kafka", self.bootstrap, "--topic-prefix", self.prefix)
        store = ("--store", f"chdb://{self.store}")
        subprocess.run(
            [sys.executable, "-m", "funnel.cli", "migrate", *store],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self._start("sink", "sink", *kafka, *store, "--metrics-port", str(self.sink_port))
        for n in range(self.worker_count):
            self._start(
                f"worker{n + 1}",
                *("worker", *kafka, "--app-id", self.group, "--partitions", str(PARTITIONS)),
                *("--data-dir", str(self.work / f"worker{n + 1}")),
                *("--web-port", str(_free_port())),
            )
        self._start(
            "collector",
            *("serve", "--host", "127.0.0.1", "--port", str(self.port), *kafka),
            *("--partitions", str(PARTITIONS)),
        )
        deadline = time.monotonic() + 120
        while True:
            self.check()
            with contextlib.suppress(OSError):
                _get(self.port, "/health", timeout=2)
                _get(self.sink_port, "/metrics", timeout=2)
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the collector or the sink did not answer within 120 s")
            time.sleep(0.3)

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.work / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{tail}")

    def landed(self) -> int:
        """Event rows the sink committed so far."""
        text = _get(self.sink_port, "/metrics")
        return int(_metric(text, "funnel_sink_rows_total", 'table="events"'))

    def sink_insert_p99(self) -> float | None:
        """The sink's insert duration p99 (seconds, from its histogram's buckets)."""
        text = _get(self.sink_port, "/metrics")
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("funnel_sink_insert_seconds_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
        total = buckets.get(float("inf"), 0.0)
        if not total:
            return None
        return next(b for b, n in sorted(buckets.items()) if n >= 0.99 * total)

    def pids(self, broker_pid: int | None) -> dict[str, int | None]:
        found: dict[str, int | None] = {
            name: p.pid for name, p in self.processes.items() if not name.startswith("worker")
        }
        found["broker"] = broker_pid
        found["load"] = os.getpid()
        for name, p in self.processes.items():
            if name.startswith("worker"):
                found[name] = p.pid
        return found

    def stop(self, *names: str) -> None:
        for name in names or tuple(self.processes):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def records(self) -> dict[str, int]:
        """Records written to each topic of the run (the workers' changelogs included)."""
        return topic_records(self.bootstrap, (self.prefix, self.group))


# --------------------------------------------------------------------------------------------
# Steps


@dataclass
class Step:
    rate: int
    seconds: float
    started_at: datetime
    ended_at: datetime
    offered: int
    accepted: int
    backlog: list[tuple[float, int]]
    """(seconds into the step, accepted - landed)."""
    cores: dict[str, float | None]
    drained_s: float | None
    """Seconds after the step until the backlog was landed (``None``: not within the wait)."""

    @property
    def growth(self) -> float | None:
        """How fast the backlog grew over the step's second half, in events/s (a least-squares
        slope: the backlog is a sawtooth, the sink lands a partition's rows once a second)."""
        half = [(t, b) for t, b in self.backlog if t >= self.seconds / 2]
        if len(half) < 3:
            return None
        mean_t = sum(t for t, _ in half) / len(half)
        mean_b = sum(b for _, b in half) / len(half)
        spread = sum((t - mean_t) ** 2 for t, _ in half)
        return sum((t - mean_t) * (b - mean_b) for t, b in half) / spread if spread else None

    @property
    def sustained(self) -> bool:
        """The collector took what was offered, and the backlog grew over the step's second
        half by less than 5% of the offered rate."""
        if self.accepted < 0.95 * self.rate * self.seconds or self.growth is None:
            return False
        return self.growth < 0.05 * self.rate


def run_step(
    deployment: Deployment,
    requests: list[tuple[int, bytes]],
    start: int,
    rate: int,
    seconds: float,
    pids: dict[str, int | None],
    drain_s: float,
) -> tuple[Step, int]:
    tally = Tally()
    landed_before = deployment.landed()
    backlog: list[tuple[float, int]] = []
    cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    t0, started_at = time.perf_counter(), datetime.now(UTC)

    async def run() -> int:
        async def sample() -> None:
            while time.perf_counter() - t0 < seconds:
                await asyncio.sleep(1.0)
                landed = await asyncio.to_thread(deployment.landed)
                elapsed = time.perf_counter() - t0
                backlog.append((elapsed, tally.accepted - (landed - landed_before)))

        sampler = asyncio.create_task(sample())
        sent = await offer(deployment.port, requests, start, rate, seconds, tally)
        await sampler
        return sent

    sent = asyncio.run(run())
    t1, ended_at = time.perf_counter(), datetime.now(UTC)
    cpu1 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    cores = {
        name: (
            round((cpu1[name] - before) / (t1 - t0), 2)  # type: ignore[operator]
            if before is not None and cpu1.get(name) is not None
            else None
        )
        for name, before in cpu0.items()
    }
    drained: float | None = None
    while time.perf_counter() - t1 < drain_s:
        deployment.check()
        if deployment.landed() - landed_before >= tally.accepted:
            drained = round(time.perf_counter() - t1, 1)
            break
        time.sleep(0.5)
    step = Step(
        rate, seconds, started_at, ended_at, tally.offered, tally.accepted, backlog, cores, drained
    )
    if tally.failed_requests:
        print(f"  {tally.failed_requests} request(s) failed: {tally.statuses}")
    return step, sent


def freshness(store_path: Path, steps: list[Step]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per step, freshness quantiles (ms) of its events; and the whole store's event counts."""
    from storage.backends import open_store

    store = open_store(f"chdb://{store_path}", "funnel")
    try:
        per_step = []
        for step in steps:
            t0 = step.started_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            t1 = step.ended_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            rows = store.query(
                "SELECT count() AS n, "
                "quantileExact(0.5)(ms) AS p50, quantileExact(0.99)(ms) AS p99, max(ms) AS max "
                "FROM (SELECT dateDiff('millisecond', received_at, landed_at) AS ms "
                "FROM funnel.events WHERE received_at >= toDateTime64('"
                + t0
                + "', 3, 'UTC') AND received_at < toDateTime64('"
                + t1
                + "', 3, 'UTC'))"
            )
            per_step.append({k: int(str(v)) for k, v in rows[0].items()})
        counts = store.query(
            "SELECT count() AS rows, uniqExact(site_id, event_id) AS distinct_ids "
            "FROM funnel.events"
        )
        return per_step, {k: int(str(v)) for k, v in counts[0].items()}
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# Report


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# End-to-end freshness ({record['mode']}, {record['at']})",
        "",
        f"`{record['command']}` — {record['settings']['workers']} worker(s), "
        f"{PARTITIONS} partitions, broker co-located, {record['machine']['cpus']} cores.",
        "",
        "| offered ev/s | accepted ev/s | freshness p50 ms | p99 ms | max ms | backlog at end "
        "| sustained | drained after s | cores: collector / workers / sink / broker / load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in record["steps"]:
        c = s["cores"]
        workers = sum(v or 0 for k, v in c.items() if k.startswith("worker"))
        cores = " / ".join(
            f"{v:.2f}" if v is not None else "?"
            for v in (c.get("collector"), workers, c.get("sink"), c.get("broker"), c.get("load"))
        )
        f = s["freshness_ms"]
        lines.append(
            f"| {s['offered_rate']:,} | {s['accepted_per_s']:,} | {f['p50']:,} | {f['p99']:,} "
            f"| {f['max']:,} | {s['backlog_at_end']:,} | {'yes' if s['sustained'] else 'no'} "
            f"| {s['drained_after_s'] if s['drained_after_s'] is not None else 'not drained'} "
            f"| {cores} |"
        )
    v = record["verified"]
    by_topic = ", ".join(f"{t} {n}" for t, n in record["kafka_records_per_event_by_topic"].items())
    lines += [
        "",
        f"Highest sustained rate: **{record['highest_sustained_rate'] or 'none'}** events/s. "
        f"Kafka records per accepted event: **{record['kafka_records_per_event']}** "
        f"({by_topic}).",
        "",
        f"Store check: {v['accepted']:,} events accepted, {v['rows']:,} rows in `events`, "
        f"{v['distinct_ids']:,} distinct ids — {'exactly once' if v['ok'] else 'MISMATCH'}. "
        f"Freshness is `landed_at - received_at`; the sink's insert p99 "
        f"(`funnel_sink_insert_seconds`) was ≤ {record['sink_insert_p99_s']} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="three 30 s steps, < 5 minutes")
    parser.add_argument("--rates", default="1000,2500,5000,7500", help="offered events/s")
    parser.add_argument("--seconds", type=float, default=60, help="per step")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--drain", type=float, default=60, help="wait for the backlog, s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds, args.drain = "1000,2500,5000", 30.0, 30.0
    rates = [int(r) for r in args.rates.split(",") if r]

    from devtools.kafka_broker import KafkaBroker

    needed = int(sum(rates) * args.seconds * 1.2) + 5_000
    built = time.perf_counter()
    requests = tracker_requests(needed, args.seed)
    total_events = sum(n for n, _ in requests)
    took = time.perf_counter() - built
    print(f"{len(requests):,} requests of {total_events:,} events in {took:.0f} s")
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, KafkaBroker() as broker:
        deployment = Deployment(broker.bootstrap_servers, Path(tmp), args.workers)
        try:
            deployment.start()
            pids = deployment.pids(broker.pid)
            # Warm-up: a few hundred events through every stage (the workers join their
            # group, the sink its partitions) before anything is measured.
            warm, sent = Tally(), 0
            sent = asyncio.run(offer(deployment.port, requests, 0, 200, 3, warm))
            deadline = time.monotonic() + 180
            while deployment.landed() < warm.accepted:
                deployment.check()
                if time.monotonic() > deadline:
                    raise RuntimeError("the warm-up events did not land within 180 s")
                time.sleep(0.5)
            accepted = warm.accepted
            for rate in rates:
                step, sent = run_step(
                    deployment, requests, sent, rate, args.seconds, pids, args.drain
                )
                steps.append(step)
                accepted += step.accepted
                print(
                    f"offered {rate:>6,} ev/s: "
                    f"accepted {step.accepted / args.seconds:>8,.0f} ev/s, "
                    f"backlog at end {step.backlog[-1][1] if step.backlog else '?'}, "
                    f"drained after {step.drained_s} s"
                )
                if step.drained_s is None:
                    break  # the next step would start on this one's backlog
            deadline = time.monotonic() + 600
            while deployment.landed() < accepted and time.monotonic() < deadline:
                deployment.check()
                time.sleep(0.5)
            insert_p99 = deployment.sink_insert_p99()
            deployment.stop()
            records = deployment.records()
        finally:
            deployment.stop()
        fresh, counts = freshness(deployment.store, steps)

    sustained = [s.rate for s in steps if s.sustained]
    command = "python -m benchmarks" + (
        " --quick" if args.quick else f" --rates {args.rates} --seconds {args.seconds:g}"
    )
    command += f" --workers {args.workers}" if args.workers != 1 else ""
    record: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bench": "e2e",
        "mode": "quick" if args.quick else "full",
        "command": command,
        "machine": {"node": platform.node(), "cpus": os.cpu_count()},
        "settings": {
            "rates": rates,
            "seconds": args.seconds,
            "workers": args.workers,
            "partitions": PARTITIONS,
            "events_per_request": f"1-{MAX_EVENTS_PER_REQUEST}, one device",
            "connections": CONNECTIONS,
        },
        "steps": [
            {
                "offered_rate": s.rate,
                "accepted_per_s": round(s.accepted / s.seconds),
                "freshness_ms": f,
                "backlog_at_end": s.backlog[-1][1] if s.backlog else None,
                "backlog_max": max((b for _, b in s.backlog), default=None),
                "backlog_growth_per_s": round(s.growth, 1) if s.growth is not None else None,
                "backlog": [(round(t, 1), b) for t, b in s.backlog],
                "sustained": s.sustained,
                "drained_after_s": s.drained_s,
                "cores": s.cores,
            }
            for s, f in zip(steps, fresh, strict=True)
        ],
        "highest_sustained_rate": max(sustained, default=None),
        "sink_insert_p99_s": insert_p99,
        "kafka_records_per_event": round(sum(records.values()) / max(1, accepted), 2),
        "kafka_records_per_event_by_topic": {
            t: round(n / max(1, accepted), 3) for t, n in sorted(records.items()) if n
        },
        "verified": {
            "accepted": accepted,
            **counts,
            "ok": counts["rows"] == counts["distinct_ids"] == accepted,
        },
    }
    at_5k = next((s for s in record["steps"] if s["offered_rate"] == 5000), None)
    record["goal"] = {
        "freshness_p99_at_5000_at_most_2s": bool(at_5k) and at_5k["freshness_ms"]["p99"] <= 2000,
        "kafka_records_per_event_at_most_1_5": record["kafka_records_per_event"] <= 1.5,
    }
    stem = "e2e-quick" if args.quick else "e2e"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
